"""Server-rendered pages. Thin: parse the request, call services/selectors, render."""

from __future__ import annotations

import functools
import mimetypes

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from diagnosis import api_tokens, selectors, services, throttling
from diagnosis.forms import HistoryFilterForm, SignUpForm, UploadForm
from diagnosis.http import client_ip, wants_json
from diagnosis.images import data_uri
from diagnosis.models import IMAGE_KINDS
from diagnosis.reports import build_report
from ecgdx.labels import LEADS


def allow_methods(*methods: str):
    """Like require_http_methods, but answers 405 with a page that says what happened."""
    allowed = {m.upper() for m in methods}

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                response = render(request, "diagnosis/error.html", {
                    "title": "Method not allowed",
                    "message": f"This page does not accept {request.method} requests.",
                }, status=405)
                response["Allow"] = ", ".join(sorted(allowed))
                return response
            return view(request, *args, **kwargs)
        return wrapper
    return decorator


@allow_methods("GET", "POST")
def upload(request):
    if not request.user.is_authenticated and not settings.ECGDX_ANONYMOUS_DEMO:
        return redirect(f"{reverse('login')}?next={request.path}")
    form = UploadForm()
    status, error = 200, None
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        try:
            if getattr(request, "upload_too_large", False):
                outcome = services.prediction_create(image_file=_TooLarge(), user=request.user,
                                                     client_ip=client_ip(request))
            elif not form.is_valid():
                raise services.UploadRejected(" ".join(form.errors.get("image", ["Invalid upload."])),
                                              code="missing_file")
            else:
                outcome = services.prediction_create(image_file=form.cleaned_data["image"], user=request.user,
                                                     client_ip=client_ip(request))
        except services.UploadRejected as exc:
            if exc.code == "not_authenticated":
                return redirect(f"{reverse('login')}?next={request.path}")
            form = UploadForm()
            status, error = exc.status, exc.message
        else:
            if outcome.stored:
                return redirect("diagnosis:result", pk=outcome.analysis.pk)
            digitization = outcome.digitization  # the one the verdict weighed
            return render(request, "diagnosis/result.html", {
                "analysis": outcome.analysis, "demo": True,
                "pictures": {k.replace("-", "_"): data_uri(v) for k, v in outcome.pictures.items()},
                **_digitization_context(digitization),
            })
    return render(request, "diagnosis/upload.html", {"form": form, "error": error}, status=status)


class _TooLarge:
    """Stands for a file the upload handler refused to read (larger than the limit)."""

    too_large = True
    size = None


@login_required
@allow_methods("GET")
def history(request):
    form = HistoryFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    qs = selectors.analysis_list(user=request.user, label=filters.get("label") or None,
                                 date_from=filters.get("date_from"), date_to=filters.get("date_to"))
    page = Paginator(qs, 20).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "diagnosis/history.html", {
        "form": form, "page": page, "query": query.urlencode(), "total": qs.count(),
    })


@login_required
@allow_methods("GET")
def result(request, pk):
    analysis = selectors.analysis_get(user=request.user, pk=pk)
    if analysis.status != "done":
        return render(request, "diagnosis/pending.html", {"analysis": analysis})
    services.explanation_get_or_create(analysis=analysis)
    digitization = services.digitization_get_or_create(analysis=analysis)
    return render(request, "diagnosis/result.html", {"analysis": analysis, "demo": False,
                                                     **_digitization_context(digitization)})


@login_required
@allow_methods("GET")
def status(request, pk):
    """The status of one analysis as JSON, for the progress script of its pending page."""
    analysis = selectors.analysis_get(user=request.user, pk=pk)
    return JsonResponse({"status": analysis.status, "stage": analysis.stage, "progress": analysis.progress,
                         "failure": analysis.failure_reason if analysis.status == "failed" else ""})


def _digitization_context(digitization) -> dict:
    """Template context of the digitised leads: the row, and the inline SVG re-plot when it worked."""
    if digitization is None or not digitization.ok:
        return {"digitization": digitization, "replot_svg": ""}
    from django.utils.safestring import mark_safe

    from diagnosis.signal_plot import signals_svg

    signals, rhythm = digitization.arrays()
    # Built from numbers and fixed lead names only (signal_plot), so safe to inline.
    rhythm_lead = (digitization.summary or {}).get("rhythm_lead")
    svg = mark_safe(signals_svg(signals, rhythm, digitization.fs, digitization.template, rhythm_lead=rhythm_lead))
    return {"digitization": digitization, "replot_svg": svg}


@login_required
@allow_methods("GET")
@never_cache
def image(request, pk, kind):
    if kind not in IMAGE_KINDS:
        raise Http404("no such picture")
    return image_response(selectors.analysis_get(user=request.user, pk=pk), kind)


def image_response(analysis, kind: str):
    """Stream one stored picture of an analysis the caller may see (both pages and API use this).

    The heatmap is made on its first request (``services.explanation_get_or_create``).
    """
    if kind == "heatmap":
        services.explanation_get_or_create(analysis=analysis)
    field_file = analysis.image_field(kind)
    if not field_file:
        raise Http404("this picture is not stored (never made, or deleted by the retention policy)")
    try:
        handle = field_file.storage.open(field_file.name, "rb")
    except OSError:
        raise Http404("this picture is missing from storage") from None
    content_type = mimetypes.guess_type(field_file.name)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "private, no-store"
    return response


# "rhythm_II.csv" is the old name of "rhythm.csv", kept so that earlier links still work.
SIGNAL_FORMATS = ("leads.csv", "rhythm.csv", "rhythm_II.csv", "wfdb.zip")


@login_required
@allow_methods("GET")
@never_cache
def signals(request, pk, fmt):
    if fmt not in SIGNAL_FORMATS:
        raise Http404("no such signal format")
    return signals_response(selectors.analysis_get(user=request.user, pk=pk), fmt)


def signals_response(analysis, fmt: str):
    """The digitised leads of an analysis the caller may see, as CSV or a zipped WFDB record
    (pages and API use this); digitises on first use like the result page."""
    digitization = services.digitization_get_or_create(analysis=analysis)
    if digitization is None:
        raise Http404("no digitised signals: the picture was deleted by the retention policy before they were made")
    if not digitization.ok:
        raise Http404(f"this picture could not be digitised: {digitization.error}")
    result = digitization.result()
    stem = f"ecgdx-{str(analysis.pk)[:8]}"
    if fmt == "leads.csv":
        body, content_type, filename = result.csv_text().encode(), "text/csv; charset=utf-8", f"{stem}-leads.csv"
    elif fmt in ("rhythm.csv", "rhythm_II.csv"):
        text = result.rhythm_csv_text()
        if text is None:
            raise Http404("this page has no rhythm strip")
        # The strip's lead as printed (read from the page); only known lead names reach a file name.
        lead = (digitization.summary or {}).get("rhythm_lead")
        suffix = f"rhythm_{lead}" if lead in LEADS else "rhythm"
        body, content_type, filename = text.encode(), "text/csv; charset=utf-8", f"{stem}-{suffix}.csv"
    else:
        body, content_type, filename = _wfdb_zip(result, stem.replace("-", "_")), "application/zip", f"{stem}-wfdb.zip"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


def _wfdb_zip(result, name: str) -> bytes:
    """A zip of the WFDB record (name.hea/.dat, 12 leads) and name_rhythm.hea/.dat."""
    import io
    import tempfile
    import zipfile
    from pathlib import Path

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="ecgdx-wfdb-") as folder:
        paths = result.save(folder, "wfdb", name=name)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                archive.write(path, Path(path).name)
    return buffer.getvalue()


@login_required
@allow_methods("GET")
@never_cache
def report(request, pk):
    return report_response(selectors.analysis_get(user=request.user, pk=pk))


def report_response(analysis):
    """The analysis's PDF report: the one its task stored, else (results of older versions) made now."""
    if analysis.status != "done":
        raise Http404("this analysis is not finished, so it has no report yet")
    pdf = None
    if analysis.report_pdf:
        try:
            with analysis.report_pdf.open("rb") as handle:
                pdf = handle.read()
        except OSError:
            pdf = None
    if pdf is None:
        services.explanation_get_or_create(analysis=analysis)
        pdf = build_report(analysis)
    response = HttpResponse(pdf, content_type="application/pdf")
    stamp = timezone.localtime(analysis.created_at).strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="ecgdx-report-{stamp}-{str(analysis.pk)[:8]}.pdf"'
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@allow_methods("POST")
def delete(request, pk):
    analysis = selectors.analysis_get(user=request.user, pk=pk)
    services.analysis_delete(analysis=analysis)
    messages.success(request, "The analysis and its pictures were deleted.")
    return redirect("diagnosis:history")


@allow_methods("GET", "POST")
def signup(request):
    if not settings.ECGDX_ALLOW_SIGNUP:
        raise Http404("sign-up is switched off")
    if request.user.is_authenticated:
        return redirect("diagnosis:upload")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}. Your account was created.")
        return redirect("diagnosis:upload")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


class SignInView(auth_views.LoginView):
    """Django's sign-in page, with attempts limited per user name and per address (diagnosis.throttling)."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        self.throttle_identity = {"username": request.POST.get("username", ""), "client_ip": client_ip(request)}
        refusal = throttling.attempt_counted(throttling.sign_in_limit(), **self.throttle_identity)
        if refusal:
            response = self.render_to_response(self.get_context_data(refusal=refusal), status=429)
            response["Retry-After"] = str(refusal.seconds_left)
            return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        throttling.attempt_refunded(throttling.sign_in_limit(), **self.throttle_identity)
        return super().form_valid(form)


@login_required
@allow_methods("GET", "POST")
def api_token(request):
    """List the user's tokens (never their value); POST makes a new one, shown on this answer only."""
    new_token = None
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            count = api_tokens.api_tokens_revoke(user=request.user)
            messages.success(request, f"{count} API token{'s' if count != 1 else ''} revoked.")
            return redirect("diagnosis:api-token")
        refusal = throttling.attempt_counted(throttling.token_create_limit(), username=request.user.get_username(),
                                             client_ip=client_ip(request))
        if refusal:
            response = render(request, "diagnosis/token.html", {
                "tokens": api_tokens.api_token_list(user=request.user),
                "error": f"Too many new tokens in a short time. Try again in {refusal.wait_text}.",
            }, status=429)
            response["Retry-After"] = str(refusal.seconds_left)
            return response
        new_token = api_tokens.api_token_create(user=request.user, replace_existing=True).token
    return render(request, "diagnosis/token.html", {
        "tokens": api_tokens.api_token_list(user=request.user), "new_token": new_token,
    })


# ------------------------------------------------------------------------------------ error pages


def _error(request, status: int, title: str, message: str):
    if wants_json(request):
        return JsonResponse({"error": {"status": status, "code": title.lower().replace(" ", "_"),
                                       "message": message}}, status=status)
    return render(request, "diagnosis/error.html", {"title": title, "message": message}, status=status)


def bad_request(request, exception=None):
    return _error(request, 400, "Bad request", "The request could not be understood.")


def permission_denied(request, exception=None):
    return _error(request, 403, "Forbidden", "You are not allowed to see this page.")


def page_not_found(request, exception=None):
    return _error(request, 404, "Not found", "There is nothing at this address, or it is not yours to see.")


def service_unavailable(request, message: str):
    """503 without touching the database: plain HTML (no user, no session) or the API's JSON error."""
    if wants_json(request):
        return JsonResponse({"error": {"status": 503, "code": "service_unavailable", "message": message}}, status=503)
    from django.utils.html import escape

    body = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Service unavailable - ecgdx"
            "</title></head><body><h1>Service unavailable</h1><p>" + escape(message) + "</p></body></html>")
    return HttpResponse(body, status=503, content_type="text/html; charset=utf-8")


def server_error(request):
    return _error(request, 500, "Server error",
                  "Something went wrong on the server. The problem was logged; please try again later.")


def csrf_failure(request, reason=""):
    if getattr(request, "upload_too_large", False):
        limit = settings.ECGDX_MAX_UPLOAD_BYTES
        return _error(request, 413, "File too large",
                      f"The file is larger than the limit of {limit / 1_000_000:.0f} MB; upload a smaller picture.")
    return _error(request, 403, "Form expired",
                  "The form was too old or came from another site (CSRF check failed). Reload the page and try again.")
