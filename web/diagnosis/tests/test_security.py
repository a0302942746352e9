"""The holes an attacker found (issue 15): each one closed, each one tested.

Private data files, hashed API tokens, the Content-Security-Policy, no-store caching, the app's own
413 behind waitress, sign-in and token throttling with a true Retry-After, one-line DisallowedHost
logs, documented error codes, and a way to find the token page.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse
from knox.models import AuthToken
from rest_framework.test import APIClient

from diagnosis import api_tokens
from diagnosis.models import Analysis
from diagnosis.tests import helpers
from diagnosis.tests.servers import clean_env, fetch, free_port, manage, multipart, running
from ecgdx import serve
from ecgdx.errors import EcgdxError

REPO = Path(__file__).resolve().parents[3]
API = "/api/v1"
PASSWORD = "pw-alice-123"


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def alice_client(alice):
    client = Client()
    client.force_login(alice)
    return client


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------ data files and server


def test_make_private_tightens_an_old_data_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    database = data / "db.sqlite3"
    for path in (database, data / "db.sqlite3-wal"):
        path.write_bytes(b"")
        path.chmod(0o644)
    serve.make_private(data, database)
    assert _mode(data) == 0o700
    assert _mode(database) == 0o600 and _mode(data / "db.sqlite3-wal") == 0o600


def test_manage_py_migrate_makes_a_private_database(tmp_path):
    data = tmp_path / "fresh"
    manage(clean_env(ECGDX_WEB_DATA_DIR=str(data)), "migrate", "--noinput", "-v", "0")
    assert _mode(data) == 0o700 and _mode(data / "db.sqlite3") == 0o600 and _mode(data / "secret_key") == 0o600


def test_server_body_limit_must_stay_above_the_apps(settings):
    settings.ECGDX_MAX_UPLOAD_BYTES = 1_000_000
    settings.ECGDX_SERVER_MAX_BODY_BYTES = 2 * 1_000_000 + 1024 * 1024  # exactly what the app refuses unread
    with pytest.raises(EcgdxError, match="must be above"):
        serve.server_body_limit(settings)
    settings.ECGDX_SERVER_MAX_BODY_BYTES = 7_000_000
    assert serve.server_body_limit(settings) == 7_000_000


def test_base_settings_leave_room_for_the_apps_413():
    from ecgdx_web.settings import base

    assert base.ECGDX_SERVER_MAX_BODY_BYTES > 2 * base.ECGDX_MAX_UPLOAD_BYTES + 1024 * 1024


def test_ecgdx_serve_private_files_json_413_and_quiet_bad_hosts(tmp_path, tiny_model):
    """One real `ecgdx serve` (waitress): file modes, an oversize upload, a scanner's Host header."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "db.sqlite3").write_bytes(b"")  # an empty file is an empty SQLite database
    (data / "db.sqlite3").chmod(0o644)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "ecgdx", "serve", "--port", str(port), "--data-dir", str(data),
           "--model", str(tiny_model), "--threads", "2"]
    # 1 MB uploads: the app refuses bodies over 3.05 MB unread; waitress's own limit is then 7.1 MB.
    with running(cmd, url=f"{base}/api/v1/health", env=clean_env(ECGDX_MAX_UPLOAD_BYTES="1000000")) as proc:
        assert _mode(data) == 0o700
        assert _mode(data / "db.sqlite3") == 0o600
        assert _mode(data / "secret_key") == 0o600

        body, content_type = multipart("image", "big.png", b"\x89PNG" + bytes(5_000_000))  # over the old 42 MB rule
        status, headers, answer = fetch(f"{base}/api/v1/predictions", data=body, headers={"Content-Type": content_type})
        assert status == 413 and headers["Content-Type"].startswith("application/json"), answer[:200]
        assert json.loads(answer)["error"]["code"] == "file_too_large"

        status, _, page = fetch(f"{base}/", headers={"Host": "evil.example"})
        assert status == 400 and b"Traceback" not in page
    output = proc.stdout.read()
    assert "Invalid HTTP_HOST header: 'evil.example'" in output
    assert "Traceback" not in output and "DisallowedHost" not in output


# ------------------------------------------------------------------------------------------ tokens


def _every_value_in_the_database() -> str:
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            values.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(values)


@pytest.mark.django_db
def test_api_tokens_are_stored_only_as_digests(alice):
    response = APIClient().post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    token = response.json()["token"]
    assert response.status_code == 200 and re.fullmatch(r"[0-9a-f]{64}", token)
    row = AuthToken.objects.get(user=alice)
    assert row.digest == hashlib.sha512(token.encode()).hexdigest()
    assert token not in _every_value_in_the_database()  # not in any column of any table
    assert token[:15] == row.token_key  # only the lookup prefix is kept in clear


@pytest.mark.django_db
def test_token_page_shows_a_token_once_and_replaces_old_ones(alice_client, alice):
    old = api_tokens.api_token_create(user=alice, replace_existing=False).token
    response = alice_client.post(reverse("diagnosis:api-token"), {"action": "create"})
    html = response.content.decode()
    new = re.search(r'id="token-value"[^>]*value="([0-9a-f]{64})"', html).group(1)
    assert response.status_code == 200 and "shown only this once" in html
    assert new not in alice_client.get(reverse("diagnosis:api-token")).content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert api.get(f"{API}/predictions").status_code == 401  # replaced
    api.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert api.get(f"{API}/predictions").status_code == 200
    response = alice_client.post(reverse("diagnosis:api-token"), {"action": "revoke"})
    assert response.status_code == 302 and AuthToken.objects.filter(user=alice).count() == 0
    assert api.get(f"{API}/predictions").status_code == 401


@pytest.mark.django_db
def test_a_user_keeps_at_most_the_configured_number_of_tokens(alice, settings):
    settings.ECGDX_API_TOKENS_PER_USER = 3
    tokens = [api_tokens.api_token_create(user=alice, replace_existing=False).token for _ in range(5)]
    assert AuthToken.objects.filter(user=alice).count() == 3
    kept = set(AuthToken.objects.filter(user=alice).values_list("digest", flat=True))
    assert kept == {hashlib.sha512(t.encode()).hexdigest() for t in tokens[-3:]}  # the newest


@pytest.mark.django_db
def test_migration_hashes_old_plain_text_tokens(alice):
    from django.apps import apps

    migration = importlib.import_module("diagnosis.migrations.0003_hash_api_tokens")
    old_key = "0123456789abcdef0123456789abcdef01234567"  # a DRF token: 40 hex characters
    with connection.cursor() as cursor:
        cursor.execute('CREATE TABLE "authtoken_token" ("key" varchar(40) PRIMARY KEY, "created" datetime, '
                       '"user_id" integer)')
        cursor.execute('INSERT INTO "authtoken_token" VALUES (%s, %s, %s)', [old_key, "2026-01-01 00:00:00", alice.pk])
    try:
        # The function needs only the editor's connection; SQLite's real editor cannot open inside a test's transaction.
        migration.hash_plain_text_tokens(apps, SimpleNamespace(connection=connection))
        with connection.cursor() as cursor:
            cursor.execute('SELECT COUNT(*) FROM "authtoken_token"')
            assert cursor.fetchone()[0] == 0  # the plain text is gone
    finally:
        with connection.cursor() as cursor:
            cursor.execute('DROP TABLE "authtoken_token"')
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {old_key}")
    assert api.get(f"{API}/predictions").status_code == 200  # and the old token still works


# ------------------------------------------------------------------------------------ CSP and caching

_PAGES_SIGNED_IN = ("diagnosis:upload", "diagnosis:history", "diagnosis:api-token")


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def _inline_scripts(html: str) -> list[str]:
    """<script> elements that run inline code (JSON data blocks do not run)."""
    found = []
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S | re.I):
        if "src=" not in attrs and "application/json" not in attrs and body.strip():
            found.append(body.strip()[:80])
    return found


@pytest.mark.django_db
def test_every_page_has_a_policy_without_inline_scripts(alice_client, alice):
    alice_client.post(reverse("diagnosis:upload"), {"image": helpers.upload(helpers.example_bytes())})
    analysis = Analysis.objects.get()
    urls = [reverse(name) for name in _PAGES_SIGNED_IN] + [
        reverse("diagnosis:result", args=[analysis.pk]), f"{API}/docs", f"{API}/redoc", "/no/such/page"]
    alice.is_staff = alice.is_superuser = True
    alice.save()
    urls.append("/admin/")
    for url in urls:
        response = alice_client.get(url)
        assert response.status_code in (200, 404), url
        policy = _policy(response)
        assert policy["script-src"] == ["'self'"] and policy["object-src"] == ["'none'"], url
        assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"], url
        assert _inline_scripts(response.content.decode()) == [], url
        assert "<style" not in response.content.decode(), url
    assert _policy(Client().get(reverse("login")))["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in _policy(alice_client.get(reverse("diagnosis:upload")))["style-src"]
    script = alice_client.get(f"{API}/docs?script")  # Swagger UI's start-up script, served as a file
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


@pytest.mark.django_db
def test_pages_and_answers_with_results_or_tokens_are_not_stored(alice_client, alice, settings):
    alice_client.post(reverse("diagnosis:upload"), {"image": helpers.upload(helpers.example_bytes())})
    analysis = Analysis.objects.get()
    api = APIClient()
    api.force_authenticate(alice)
    responses = {
        "result": alice_client.get(reverse("diagnosis:result", args=[analysis.pk])),
        "history": alice_client.get(reverse("diagnosis:history")),
        "token page": alice_client.get(reverse("diagnosis:api-token")),
        "new token": alice_client.post(reverse("diagnosis:api-token"), {"action": "create"}),
        "api detail": api.get(f"{API}/predictions/{analysis.pk}"),
        "api list": api.get(f"{API}/predictions"),
        "api token": APIClient().post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD}),
        "api error": api.get(f"{API}/predictions/00000000-0000-0000-0000-000000000000"),
    }
    settings.ECGDX_ANONYMOUS_DEMO = True
    responses["demo result"] = Client().post(reverse("diagnosis:upload"),
                                             {"image": helpers.upload(helpers.example_bytes())})
    for name, response in responses.items():
        assert response.status_code in (200, 404), name
        assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"], name
    css = alice_client.get("/static/diagnosis/app.css")
    assert css.status_code == 200 and "no-store" not in css.get("Cache-Control", "")  # static files stay cacheable


@pytest.mark.django_db
def test_the_token_page_is_linked_from_every_signed_in_page(alice_client):
    link = f'href="{reverse("diagnosis:api-token")}"'
    for name in ("diagnosis:upload", "diagnosis:history"):
        assert link in alice_client.get(reverse(name)).content.decode(), name
    assert link not in Client().get(reverse("login")).content.decode()  # not for strangers


# ---------------------------------------------------------------------------------------- throttling


def _sign_in(client, username, password, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


@pytest.mark.django_db
def test_sign_in_page_locks_a_user_name_after_wrong_passwords(alice, settings, monkeypatch):
    settings.ECGDX_SIGN_IN_LIMIT_PER_USER = 3
    settings.ECGDX_SIGN_IN_WINDOW_SECONDS = 900
    clock = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    for _ in range(3):
        assert _sign_in(Client(), "alice", "wrong").status_code == 200
    clock[0] += 100
    locked = _sign_in(Client(), "ALICE ", PASSWORD)  # the right password, another spelling: still refused
    assert locked.status_code == 429 and locked["Retry-After"] == "800"
    assert b"Too many sign-in attempts" in locked.content and b"14 minutes" in locked.content
    clock[0] += 801
    assert _sign_in(Client(), "alice", PASSWORD).status_code == 302  # the window is over


@pytest.mark.django_db
def test_sign_in_limit_per_address_covers_many_user_names(alice, settings):
    settings.ECGDX_SIGN_IN_LIMIT_PER_ADDRESS = 4
    for n in range(4):
        assert _sign_in(Client(), f"guess{n}", "wrong", REMOTE_ADDR="10.0.0.9").status_code == 200
    assert _sign_in(Client(), "alice", PASSWORD, REMOTE_ADDR="10.0.0.9").status_code == 429
    assert _sign_in(Client(), "alice", PASSWORD, REMOTE_ADDR="10.0.0.10").status_code == 302  # other address


@pytest.mark.django_db
def test_successful_sign_ins_give_their_attempts_back(alice, settings):
    settings.ECGDX_SIGN_IN_LIMIT_PER_USER = 2
    settings.ECGDX_SIGN_IN_LIMIT_PER_ADDRESS = 6
    for _ in range(5):  # a typo, then the right password, again and again: the user name is never locked
        assert _sign_in(Client(), "alice", "typo").status_code == 200
        assert _sign_in(Client(), "alice", PASSWORD).status_code == 302
    # The address's failures still add up (5 typos so far): one more is allowed, then it is locked.
    assert _sign_in(Client(), "bob", "guess").status_code == 200
    assert _sign_in(Client(), "alice", PASSWORD).status_code == 429


@pytest.mark.django_db
def test_forty_wrong_passwords_to_the_token_endpoint_are_throttled(alice, monkeypatch):
    clock = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    client = APIClient()
    statuses = []
    for _ in range(40):
        statuses.append(client.post(f"{API}/auth/token", {"username": "alice", "password": "wrong"}).status_code)
        clock[0] += 1
    assert statuses[:5] == [400] * 5 and set(statuses[5:]) == {429}  # 5 per user name by default
    response = client.post(f"{API}/auth/token", {"username": "alice", "password": PASSWORD})
    body = response.json()["error"]
    assert response.status_code == 429 and body["code"] == "rate_limited" and "token" not in response.json()
    assert response["Retry-After"] == str(900 - 40)  # the window opened with the first attempt
    assert AuthToken.objects.count() == 0


@pytest.mark.django_db
def test_token_page_creations_are_throttled(alice_client, settings):
    settings.ECGDX_TOKEN_CREATE_LIMIT_PER_USER = 2
    for _ in range(2):
        assert alice_client.post(reverse("diagnosis:api-token"), {"action": "create"}).status_code == 200
    refused = alice_client.post(reverse("diagnosis:api-token"), {"action": "create"})
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 3600
    assert b"Too many new tokens" in refused.content and b'id="token-value"' not in refused.content


@pytest.mark.django_db
def test_upload_429_says_when_the_window_ends(alice, settings, monkeypatch):
    settings.ECGDX_UPLOAD_RATE_LIMIT = 1
    settings.ECGDX_UPLOAD_RATE_WINDOW_SECONDS = 3600
    now = 1_800_000_000.0 + 1234  # 1_800_000_000 is a whole number of hours since the epoch
    monkeypatch.setattr(time, "time", lambda: now)
    api = APIClient()
    api.force_authenticate(alice)
    post = lambda: api.post(f"{API}/predictions", {"image": helpers.upload(helpers.example_bytes())},  # noqa: E731
                            format="multipart")
    assert post().status_code == 202
    refused = post()
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert refused["Retry-After"] == str(3600 - 1234)


# ------------------------------------------------------------------------------ error codes and docs


def _documented_error_codes() -> set[str]:
    text = (REPO / "docs" / "web.md").read_text()
    table = text.split("### Errors", 1)[1].split("\n## ", 1)[0]
    return {code for row in table.splitlines() if row.startswith("| 4") or row.startswith("| 5")
            for code in re.findall(r"`([a-z_]+)`", row.split("|")[2])}


@pytest.mark.django_db
def test_api_error_codes_are_the_documented_ones(alice, settings):
    settings.ECGDX_SIGN_IN_LIMIT_PER_USER = 1
    api = APIClient()
    api.force_authenticate(alice)
    answers = [
        api.get(f"{API}/predictions/00000000-0000-0000-0000-000000000000"),
        api.get(f"{API}/no-such-endpoint"),
        api.generic("POST", f"{API}/predictions", b"raw", content_type="text/plain"),
        api.delete(f"{API}/predictions"),
        api.get(f"{API}/predictions", {"label": "cat"}),
        APIClient().get(f"{API}/predictions"),
        APIClient().post(f"{API}/auth/token", {"username": "alice", "password": "wrong"}),
        APIClient().post(f"{API}/auth/token", {"username": "alice", "password": "wrong"}),
    ]
    codes = [a.json()["error"]["code"] for a in answers]
    assert codes == ["not_found", "not_found", "unsupported_type", "method_not_allowed", "invalid",
                     "not_authenticated", "invalid_credentials", "rate_limited"]
    undocumented = set(codes) - _documented_error_codes()
    assert not undocumented, f"codes missing from docs/web.md: {undocumented}"


def test_docs_example_prediction_matches_the_bundled_model():
    """The example in docs/web.md shows the explanation method the bundled model really gives."""
    onnxruntime = pytest.importorskip("onnxruntime")
    model = REPO / "src" / "ecgdx" / "assets" / "default.onnx"
    meta = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta()
    layout = json.loads(meta.custom_metadata_map["preprocess"]).get("layout", "page")
    text = (REPO / "docs" / "web.md").read_text()
    example = json.loads(re.search(r"A finished prediction \(numbers illustrative\):\s*```json\n(.*?)```", text,
                                   re.S).group(1))
    from diagnosis.api.serializers import PredictionSerializer

    assert set(example) <= set(PredictionSerializer.Meta.fields) and example["status"] == "done"
    expected = "canonical" if layout == "canonical" else "page_layout"
    assert example["explanation"]["method"] == expected
    assert example["preprocess"]["layout_method"] == ("canonical" if layout == "canonical" else "page")
    assert example["model_version"] == json.loads(meta.custom_metadata_map["model_version"])


# ------------------------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.django_db(transaction=True)
def test_no_page_breaks_its_policy_in_a_browser(live_server, monkeypatch):
    """Chromium reports every CSP violation; the app's pages, Swagger UI, Redoc and the admin have none."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); browser CSP test skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (web-test extra) is missing")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    User.objects.create_superuser("admin", password="a-long-pass-1234")
    violations: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.on("console", lambda m: violations.append(f"{page.url}: {m.text}") if m.text.startswith("CSP ") else None)
        page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                             "console.log('CSP ' + e.violatedDirective + ' ' + e.blockedURI))")
        page.goto(live_server.url + "/accounts/login/")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill("a-long-pass-1234")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(live_server.url + "/")
        page.get_by_label("Choose a picture or drag it here").set_input_files(str(helpers.EXAMPLE_ECG))
        page.get_by_role("button", name="Analyse").click()
        page.wait_for_url(re.compile(r".*/analyses/[0-9a-f-]{36}/$"))
        width = page.eval_on_selector("#probabilities .bar-fill", "el => el.getBoundingClientRect().width")
        assert width > 0  # the bars' inline widths are allowed
        # A queued analysis's page: its progress script polls the status (fetch: connect-src 'self').
        from diagnosis.models import Analysis

        waiting = Analysis.objects.create(owner=User.objects.get(username="admin"), upload_sha256="0" * 64,
                                          upload_bytes=1, upload_type="png")
        page.goto(f"{live_server.url}/analyses/{waiting.pk}/")
        page.wait_for_selector("#analysis-progress")
        page.wait_for_timeout(1500)  # at least one status poll
        assert "Waiting for a worker" in page.inner_text("#status-title")
        for path, ready in (("/account/token/", "h1"), ("/api/v1/docs", ".swagger-ui .info .title"),
                            ("/api/v1/redoc", ".api-content"), ("/admin/", "#site-name")):
            page.goto(live_server.url + path)
            page.wait_for_selector(ready)
            page.wait_for_timeout(300)
        browser.close()
    # Blocking other sites is the policy at work (the app works offline): Redoc's footer logo is on a CDN.
    own = [v for v in violations if not re.search(r"CSP \S+ https?://(?!localhost|127\.0\.0\.1)", v)]
    assert own == [], own
