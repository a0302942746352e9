"""REST API v1 views: thin wrappers around diagnosis.services and diagnosis.selectors."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import connection
from django.http import Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnosis import api_tokens, selectors, services, throttling
from diagnosis.api.errors import error_response
from diagnosis.api.serializers import (
    ErrorSerializer,
    FilterSerializer,
    HealthSerializer,
    ModelInfoSerializer,
    PredictionSerializer,
    UploadSerializer,
)
from diagnosis.http import client_ip
from diagnosis.inference_adapter import get_predictor
from diagnosis.models import IMAGE_KINDS
from diagnosis.views import SIGNAL_FORMATS, image_response, report_response, signals_response
from ecgdx.errors import ModelError

_ERRORS = {code: OpenApiResponse(ErrorSerializer, description=text) for code, text in {
    400: "missing field, empty or corrupt file",
    401: "not authenticated",
    413: "file or picture larger than the limits",
    415: "not a JPEG or PNG picture",
    422: "not a readable 12-lead ECG page (quality gate)",
    429: "too many attempts (uploads, sign-ins); Retry-After says how many seconds to wait",
    503: "model not available",
}.items()}


class PredictionPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class UploadPermission(permissions.BasePermission):
    """Signed-in users; anonymous users too for POST when the demo setting is on."""

    def has_permission(self, request, view):
        if request.user and request.user.is_authenticated:
            return True
        return request.method == "POST" and settings.ECGDX_ANONYMOUS_DEMO


class PredictionListCreate(APIView):
    permission_classes = [UploadPermission]

    @extend_schema(
        operation_id="predictions_list",
        parameters=[
            FilterSerializer,
            OpenApiParameter("page", int, description="page number (1-based)"),
            OpenApiParameter("page_size", int, description="results per page (default 20, at most 100)"),
        ],
        responses={200: PredictionSerializer(many=True), 400: _ERRORS[400], 401: _ERRORS[401]},
        summary="Your analyses, newest first (paged)",
    )
    def get(self, request):
        filters = FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = selectors.analysis_list(user=request.user, **filters.validated_data)
        paginator = PredictionPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = PredictionSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        operation_id="predictions_create",
        request={"multipart/form-data": UploadSerializer},
        parameters=[OpenApiParameter(
            "Prefer", str, OpenApiParameter.HEADER, required=False,
            description="'wait=N' (RFC 7240): answer when the analysis is finished, waiting at most N seconds "
            "(at most ECGDX_MAX_PREFER_WAIT_SECONDS, default 60); without it the answer comes at once")],
        responses={
            202: OpenApiResponse(PredictionSerializer, description=(
                "stored and queued: the analysis runs on a worker. 'Location' is the prediction's URL; GET it "
                "until status is done or failed")),
            201: OpenApiResponse(PredictionSerializer, description="with 'Prefer: wait=N': finished within N s"),
            200: OpenApiResponse(PredictionSerializer, description="anonymous demo: analysed at once, not stored "
                                 "(id and URLs null)"),
            **{k: v for k, v in _ERRORS.items()}},
        summary="Send one ECG picture to be analysed",
    )
    def post(self, request):
        image_file = request.FILES.get("image")  # parses the body: the size flag is set while parsing
        if getattr(request._request, "upload_too_large", False):
            image_file = _TooLarge()
        else:
            if image_file is None:
                fields = {"image": ["No file was sent in the multipart field 'image'."]}
                return error_response(400, "missing_file",
                                      "No file was sent: POST multipart/form-data with the picture in the field 'image'.",
                                      fields=fields)
        outcome = services.prediction_create(image_file=image_file, user=request.user, client_ip=client_ip(request))
        if not outcome.stored:
            data = PredictionSerializer(outcome.analysis, context={"request": request, "stored": False}).data
            return Response(data, status=status.HTTP_200_OK)
        analysis = outcome.analysis
        wait = prefer_wait_seconds(request)
        if wait:
            analysis = services.analysis_wait(analysis=analysis, seconds=wait)
        return prediction_response(request, analysis, created=analysis.finished and bool(wait))


def prefer_wait_seconds(request) -> float:
    """N of an RFC 7240 'Prefer: wait=N' header (capped by the setting), 0 without one."""
    for preference in request.headers.get("Prefer", "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return 0.0
            return max(0.0, min(seconds, float(settings.ECGDX_MAX_PREFER_WAIT_SECONDS)))
    return 0.0


def prediction_response(request, analysis, *, created: bool) -> Response:
    """201 for a finished analysis the client waited for, 202 otherwise; 'Location' is its URL. A failed
    analysis the client waited for answers with its own error status (422 for not an ECG page), in
    the API's error shape, with the prediction's id."""
    url = request.build_absolute_uri(reverse("api:prediction-detail", kwargs={"pk": analysis.pk}))
    if created and analysis.status == "failed":
        response = error_response(analysis.failure_status or 422, analysis.failure_code or "failed",
                                  analysis.failure_reason, details={"id": str(analysis.pk), "status": "failed", "url": url})
    else:
        data = PredictionSerializer(analysis, context={"request": request}).data
        response = Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_202_ACCEPTED)
    response["Location"] = url
    if created:
        response["Preference-Applied"] = "wait"
    return response


class _TooLarge:
    too_large = True
    size = None


class PredictionDetail(APIView):
    @extend_schema(
        operation_id="predictions_retrieve",
        parameters=[OpenApiParameter("Prefer", str, OpenApiParameter.HEADER, required=False,
                                     description="'wait=N' (RFC 7240): wait at most N seconds for it to finish")],
        responses={200: PredictionSerializer, 404: OpenApiResponse(ErrorSerializer)},
        summary="One analysis: its status (queued, running, done, failed with a reason) and, when done, the result")
    def get(self, request, pk):
        analysis = selectors.analysis_get(user=request.user, pk=pk)
        wait = prefer_wait_seconds(request)
        if wait and not analysis.finished:
            analysis = services.analysis_wait(analysis=analysis, seconds=wait)
        digitization = None
        if analysis.status == "done":
            # Analyses stored before they ran as tasks get their explanation and leads on first view.
            services.explanation_get_or_create(analysis=analysis)
            digitization = services.digitization_get_or_create(analysis=analysis)
        context = {"request": request, "digitization": digitization}
        return Response(PredictionSerializer(analysis, context=context).data)


class _AnyAccept(BaseContentNegotiation):
    """Binary answers (PNG, PDF) are what they are: never 406 for 'Accept: image/png' or 'application/pdf'."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class PredictionImage(APIView):
    content_negotiation_class = _AnyAccept
    @extend_schema(
        operation_id="predictions_image",
        parameters=[OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=list(IMAGE_KINDS))],
        responses={(200, "image/png"): OpenApiTypes.BINARY, 404: OpenApiResponse(ErrorSerializer)},
        summary="One stored picture: the upload, what the model saw, or the heatmap",
    )
    def get(self, request, pk, kind):
        if kind not in IMAGE_KINDS:
            raise Http404("no such picture")
        return image_response(selectors.analysis_get(user=request.user, pk=pk), kind)


class PredictionSignals(APIView):
    content_negotiation_class = _AnyAccept

    @extend_schema(
        operation_id="predictions_signals",
        parameters=[OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=list(SIGNAL_FORMATS))],
        responses={(200, "text/csv"): OpenApiTypes.BINARY, (200, "application/zip"): OpenApiTypes.BINARY,
                   404: OpenApiResponse(ErrorSerializer)},
        summary="The digitised leads: CSV (time + 12 leads), the rhythm strip CSV, or a zipped WFDB record",
    )
    def get(self, request, pk, fmt):
        if fmt not in SIGNAL_FORMATS:
            raise Http404("no such signal format")
        return signals_response(selectors.analysis_get(user=request.user, pk=pk), fmt)


class PredictionReport(APIView):
    content_negotiation_class = _AnyAccept
    @extend_schema(operation_id="predictions_report",
                   responses={(200, "application/pdf"): OpenApiTypes.BINARY, 404: OpenApiResponse(ErrorSerializer)},
                   summary="PDF report of one analysis")
    def get(self, request, pk):
        return report_response(selectors.analysis_get(user=request.user, pk=pk))


class ModelInfo(APIView):
    @extend_schema(operation_id="model_retrieve", responses={200: ModelInfoSerializer, 503: _ERRORS[503]},
                   summary="The model in use: version, classes, test metrics (from the ONNX metadata)")
    def get(self, request):
        try:
            info = get_predictor().model_info()
        except ModelError as exc:
            return error_response(503, "model_unavailable", f"The diagnosis model is not available: {exc}")
        return Response(ModelInfoSerializer(info).data)


class TokenCreate(APIView):
    """Sign in with user name and password; answers a new API token (shown once: only its digest is kept).

    Attempts are limited per user name and per address (diagnosis.throttling), counted before the
    password is checked, so a locked-out guesser learns nothing, not even whether a guess was right.
    """

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []
    parser_classes = [FormParser, MultiPartParser, JSONParser]

    class SignInSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})

    class IssuedTokenSerializer(serializers.Serializer):
        token = serializers.CharField(help_text="send as 'Authorization: Token <token>'; it is not shown again")
        expiry = serializers.DateTimeField(allow_null=True, help_text="null: valid until replaced or revoked")

    @extend_schema(operation_id="auth_token_create", request=SignInSerializer,
                   responses={200: IssuedTokenSerializer, 400: OpenApiResponse(ErrorSerializer, description=(
                       "missing fields, or wrong user name or password (code invalid_credentials)")),
                       429: _ERRORS[429]},
                   summary="Exchange user name and password for an API token")
    def post(self, request):
        given = self.SignInSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        username, password = given.validated_data["username"], given.validated_data["password"]
        identity = {"username": username, "client_ip": client_ip(request)}
        limit = throttling.sign_in_limit()
        refusal = throttling.attempt_counted(limit, **identity)
        if refusal:
            response = error_response(429, "rate_limited", "Too many sign-in attempts for this user name or from "
                                      f"this address. Try again in {refusal.wait_text}.")
            response["Retry-After"] = str(refusal.seconds_left)
            return response
        user = authenticate(request._request, username=username, password=password)
        if user is None:
            return error_response(400, "invalid_credentials", "The user name or password is wrong.")
        throttling.attempt_refunded(limit, **identity)
        issued = api_tokens.api_token_create(user=user, replace_existing=False)
        return Response(self.IssuedTokenSerializer(issued).data)


class Health(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(operation_id="health_retrieve", responses={200: HealthSerializer, 503: HealthSerializer},
                   summary="Liveness and readiness: database and model")
    def get(self, request):
        database = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            database = False
        model_version, message = None, ""
        try:
            model_version = get_predictor().model_version
        except ModelError as exc:
            message = str(exc)
        ok = database and model_version is not None
        body = {"status": "ok" if ok else "degraded", "database": database,
                "model_loaded": model_version is not None, "model_version": model_version,
                "message": message if not ok else ""}
        if not database:
            body["message"] = "the database cannot be reached"
        return Response(HealthSerializer(body).data, status=200 if ok else 503)
