"""Server-rendered pages: the notebook list and one notebook, readable without JavaScript,
and the large outputs and long stdout that events and states refer to."""
import base64

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import IntegrityError, transaction
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.utils.text import slugify
from django.views.decorators.http import require_http_methods, require_POST

from . import exporting, importing, notebook_files, operations, output_documents, packages, permissions
from .constants import OUTPUT_HTML_STYLE
from .kernel.display import CHART_MIME_TYPES
from .forms import ApiTokenForm, ImportForm, NotebookForm, ShareForm
from .models import THEMES, ApiToken, Cell, Notebook, OutputBlob, UserPreference


# The message of every 404 this app raises is written for its user: templates/404.html shows it.
NOTEBOOK_NOT_FOUND = "This notebook does not exist or has not been shared with you: ask its owner."


def _notebook_for(user, notebook_id):
    """The notebook if `user` may view it; 404 otherwise, so its existence is never revealed."""
    notebook = Notebook.objects.visible_to(user).filter(pk=notebook_id).select_related("owner").first()
    if notebook is None:
        raise Http404(NOTEBOOK_NOT_FOUND)
    return notebook


@login_required
@require_http_methods(["GET", "POST"])
def notebook_list(request):
    form = NotebookForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        notebook = operations.create_notebook(request.user, form.cleaned_data["name"])
        messages.success(request, f"Created “{notebook.name}”.")
        return redirect("notebooks:detail", notebook_id=notebook.pk)
    return _list_page(request, form=form, import_form=ImportForm())


def _list_page(request, *, form, import_form, import_error=None, status=None):
    notebooks = Notebook.objects.visible_to(request.user).with_counts().with_role(request.user).select_related("owner")
    if status is None:
        status = 400 if form.errors or import_form.errors else 200
    context = {"notebooks": notebooks, "form": form, "import_form": import_form, "import_error": import_error}
    return render(request, "notebooks/list.html", context, status=status)


# The multipart framing and the name field around an imported file, at most.
IMPORT_REQUEST_SLACK = 64 * 1024


@login_required
@require_POST
def notebook_import(request):
    """An uploaded .ipynb or .py notebook becomes a new notebook of the uploader's (docs/files.md);
    a file that cannot be read creates nothing and says why."""
    limit = settings.IMPORT_MAX_BYTES
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit + IMPORT_REQUEST_SLACK:
        error = f"The upload is larger than the import limit of {limit:,} bytes."
        return _list_page(request, form=NotebookForm(), import_form=ImportForm(), import_error=error, status=413)
    form = ImportForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            imported = importing.read_notebook(upload.name, upload.read(limit + 1), max_bytes=limit, max_code_bytes=settings.MAX_CODE_BYTES)
        except importing.NotebookFileError as exc:
            form.add_error("file", str(exc))
        else:
            notebook = operations.import_notebook(request.user, name=form.cleaned_data["name"] or imported.name, cells=imported.cells, requirements=imported.requirements)
            messages.success(request, " ".join([f"Imported “{notebook.name}”: {len(imported.cells)} cells.", *imported.notes]))
            return redirect("notebooks:detail", notebook_id=notebook.pk)
    return _list_page(request, form=NotebookForm(), import_form=form)


@login_required
@require_http_methods(["GET", "HEAD"])
def notebook_export(request, notebook_id, fmt):
    """The notebook as a download: .ipynb with outputs, percent .py, or an HTML report
    (`?code=1`: with the code); anyone who may view it may export it."""
    notebook = _notebook_for(request.user, notebook_id)
    if fmt not in exporting.FORMATS:
        raise Http404("No such export format.")
    exported = exporting.export_notebook(notebook, fmt, show_code=request.GET.get("code") == "1")
    response = HttpResponse(exported.content, content_type=exported.content_type)
    response["Content-Disposition"] = content_disposition_header(True, exported.filename)
    response["X-Content-Type-Options"] = "nosniff"
    if fmt == "html":
        response["Content-Security-Policy"] = exporting.report_policy()  # also sent as a header
    return response


@login_required
def notebook_detail(request, notebook_id):
    notebook = _notebook_for(request.user, notebook_id)
    return render(request, "notebooks/detail.html", _detail_context(request, notebook, ShareForm()))


@login_required
@require_http_methods(["GET", "HEAD"])
def notebook_app(request, notebook_id):
    """The notebook as an app (outputs, prose and inputs, no code), live like the notebook page;
    for anyone who may view it, and moving inputs for those who may edit it (docs/frontend.md)."""
    notebook = _notebook_for(request.user, notebook_id)
    role = notebook.role_of(request.user)
    context = {"notebook": notebook, "can_edit": permissions.may(role, permissions.EDIT), "output_style": OUTPUT_HTML_STYLE}
    return render(request, "notebooks/app.html", context)


def _detail_context(request, notebook, share_form):
    role = notebook.role_of(request.user)
    return {
        "notebook": notebook,
        "cells": notebook.cells.order_by("position"),
        "role": role,
        "can_edit": permissions.may(role, permissions.EDIT),
        "is_owner": permissions.may(role, permissions.MANAGE),
        "rename_form": NotebookForm(initial={"name": notebook.name}),
        "members": notebook.memberships.select_related("user").order_by("user__username"),
        "share_form": share_form,
        "kernel_outbound": settings.KERNEL_NETWORK == "outbound",  # the egress allowlist applies (docs/security.md#egress)
        "output_style": OUTPUT_HTML_STYLE,
        # The notebook's own packages (docs/packages.md): the ModuleNotFoundError prompt offers the
        # package that provides a module through this table (static/notebooks/js/packages_panel.js).
        "packages_enabled": settings.NOTEBOOK_PACKAGES,
        "import_distributions": packages.DISTRIBUTIONS_BY_MODULE,
        # The notebook's files (docs/notebook-files.md), listed for a page without JavaScript;
        # the limits are what files_panel.js checks before sending and tells the user.
        "files": notebook_files.current_files(notebook.pk),
        "file_limit_mb": settings.NOTEBOOK_FILE_MAX_MB,
        "files_quota_mb": settings.NOTEBOOK_FILES_QUOTA_MB,
    }


@login_required
@require_POST
def notebook_share(request, notebook_id):
    notebook = _notebook_for(request.user, notebook_id)
    if not permissions.may(notebook.role_of(request.user), permissions.SHARE):
        # Members may view the page but only the owner shares; not a secret, so 403.
        return render(request, "notebooks/forbidden.html", {"notebook": notebook}, status=403)
    form = ShareForm(request.POST)
    if form.is_valid():
        member, role, username = form.cleaned_data["user"], form.cleaned_data["role"], form.cleaned_data["username"]
        try:
            if request.POST.get("action") == "remove":
                operations.unshare_notebook(notebook.pk, request.user, member=member)
                messages.success(request, f"{username} no longer has access.")
            else:
                operations.share_notebook(notebook.pk, request.user, member=member, role=role)
                messages.success(request, f"Shared with {username} as {role}.")
            return redirect("notebooks:detail", notebook_id=notebook.pk)
        except operations.OperationError as exc:
            form.add_error("username", exc.message)
    return render(request, "notebooks/detail.html", _detail_context(request, notebook, form), status=400)


@require_http_methods(["GET", "POST"])
def signup(request):
    """Self-service accounts, only where the operator turned them on (SIGNUP_ENABLED)."""
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is not enabled on this server; ask its operator for an account.")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        messages.success(request, f"Welcome, {user.username}.")
        return redirect("notebooks:list")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_POST
def notebook_rename(request, notebook_id):
    notebook = _notebook_for(request.user, notebook_id)
    form = NotebookForm(request.POST)
    if form.is_valid():
        try:
            operations.rename_notebook(notebook.pk, request.user, name=form.cleaned_data["name"])
            messages.success(request, f"Renamed to “{form.cleaned_data['name']}”.")
            return redirect("notebooks:detail", notebook_id=notebook.pk)
        except operations.OperationError as exc:
            form.add_error("name", exc.message)
    context = _detail_context(request, notebook, ShareForm())
    context["rename_form"] = form
    status = 403 if not context["is_owner"] else 400
    return render(request, "notebooks/detail.html", context, status=status)


@login_required
@require_POST
def notebook_egress(request, notebook_id):
    """The owner's egress allowlist (one host:port a line), from the notebook's settings card."""
    notebook = _notebook_for(request.user, notebook_id)
    text = request.POST.get("allowlist", "")
    try:
        operations.set_egress_allowlist(notebook.pk, request.user, allowlist=text)
    except operations.OperationError as exc:
        context = _detail_context(request, notebook, ShareForm())
        context["egress_error"], context["egress_text"] = exc.message, text
        return render(request, "notebooks/detail.html", context, status=403 if exc.code == "forbidden" else 400)
    messages.success(request, "Saved the egress allowlist; the notebook's kernel restarts on it.")
    return redirect("notebooks:detail", notebook_id=notebook.pk)


@login_required
@require_http_methods(["GET", "POST"])
def notebook_delete(request, notebook_id):
    """GET: a page that asks to confirm, naming what goes; POST: delete (owner only)."""
    notebook = _notebook_for(request.user, notebook_id)
    if not permissions.may(notebook.role_of(request.user), permissions.MANAGE):
        reason = permissions.REFUSALS[permissions.MANAGE]
        return render(request, "notebooks/forbidden.html", {"notebook": notebook, "reason": reason}, status=403)
    if request.method == "POST":
        name = operations.delete_notebook(notebook.pk, request.user)
        messages.success(request, f"Deleted “{name}”.")
        return redirect("notebooks:list")
    counts = {"cells": notebook.cells.count(), "members": notebook.memberships.count()}
    return render(request, "notebooks/delete.html", {"notebook": notebook, **counts})


# --- large outputs, by reference (docs/protocol.md#sizes) ---------------------------------
# Content-addressed, so a response never changes: cached for a year, revalidated by ETag.
# Only people who may view the notebook get them (anyone else: 404, like the notebook).
OUTPUT_CACHE = "private, max-age=31536000, immutable"
# An HTML output is a document of its own, in an opaque origin where its scripts run and reach
# nothing of this site (output_documents.py).


@require_http_methods(["GET", "HEAD"])
def cell_output_data(request, notebook_id, digest):
    blob = (
        OutputBlob.objects.filter(cell__notebook__in=Notebook.objects.visible_to(request.user).filter(pk=notebook_id), digest=digest)
        .only("mime_type", "data")
        .first()
    )
    if blob is None:
        raise Http404("No such output.")
    etag = f'"{digest}"'
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        response = HttpResponse(status=304)
    elif blob.mime_type.startswith("image/"):
        response = HttpResponse(base64.b64decode(blob.data), content_type=blob.mime_type)
    elif blob.mime_type == "text/html":
        response = output_documents.frame_response(output_documents.html_document(blob.data))
    elif blob.mime_type in CHART_MIME_TYPES:
        response = HttpResponse(blob.data, content_type="application/json")
    else:
        response = HttpResponse(blob.data, content_type="text/plain; charset=utf-8")
    response["ETag"] = etag
    response["Cache-Control"] = OUTPUT_CACHE
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_http_methods(["GET", "HEAD"])
def cell_stdout(request, notebook_id, cell_id):
    """A cell's whole stdout (a notebook_state carries its tail when it is long)."""
    cell = Cell.objects.filter(pk=cell_id, notebook__in=Notebook.objects.visible_to(request.user).filter(pk=notebook_id)).only("stdout").first()
    if cell is None:
        raise Http404("No such cell.")
    response = HttpResponse(cell.stdout, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "private, no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def cell_outputs(request, notebook_id, cell_id):
    """A cell's stored outputs, {"outputs": [...]}: a big notebook's state leaves them out for
    its later cells (`outputsRef`, docs/protocol.md), and the page fetches them as they come near."""
    cell = Cell.objects.filter(pk=cell_id, notebook__in=Notebook.objects.visible_to(request.user).filter(pk=notebook_id)).only("outputs").first()
    if cell is None:
        raise Http404("No such cell.")
    response = JsonResponse({"outputs": cell.outputs or []})
    response["Cache-Control"] = "private, no-cache"
    return response


@require_POST
def set_theme(request):
    """The person's colour theme (light, dark or system), kept on their account for every page
    (docs/frontend.md, "Themes"). A fetch gets JSON back; a plain form post goes back where it came from."""
    theme = request.POST.get("theme", "")
    choices = [value for value, _ in THEMES]
    if theme not in choices:
        return JsonResponse({"error": f"Unknown theme {theme!r}: choose one of {', '.join(choices)}."}, status=400)
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Log in to keep a theme on your account; this browser remembers it meanwhile."}, status=403)
    UserPreference.objects.update_or_create(user=request.user, defaults={"theme": theme})
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"theme": theme})
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = "notebooks:list"
    return redirect(back)


# --- a notebook's files (docs/notebook-files.md) ---------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
def notebook_files_view(request, notebook_id):
    """GET: the notebook's current files (JSON, for anyone who may view). POST (editors): upload
    one or more files (`file`, several allowed; `name` renames a single one, e.g. into a folder);
    Django spools each to disk as it arrives, and each is stored by content, in chunks. Answers
    JSON: the files stored, or `{"error": ...}` with 400/403/413 and nothing stored for a file
    that was refused."""
    notebook = _notebook_for(request.user, notebook_id)
    if request.method == "GET":
        return JsonResponse({"files": [notebook_files.describe(row) for row in notebook_files.current_files(notebook.pk)]})
    if not permissions.may(notebook.role_of(request.user), permissions.EDIT):
        return JsonResponse({"error": "Viewers cannot add files to this notebook."}, status=403)
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > notebook_files.quota_bytes() + (1 << 20):
        return JsonResponse({"error": f"The upload is {declared / 1e6:,.1f} MB, more than this notebook's quota of {settings.NOTEBOOK_FILES_QUOTA_MB:,} MB."}, status=413)
    uploads = request.FILES.getlist("file")
    if not uploads:
        return JsonResponse({"error": "Choose a file to upload."}, status=400)
    name = (request.POST.get("name") or "").strip()
    if name and len(uploads) > 1:
        return JsonResponse({"error": "A name can be given to one file at a time."}, status=400)
    stored, errors = [], []
    for upload in uploads:
        try:
            row = notebook_files.add_file(notebook.pk, request.user, path=name or upload.name, stream=upload, size=upload.size)
        except notebook_files.FileError as exc:
            errors.append(f"{upload.name}: {exc.message}")
            continue
        except operations.OperationError as exc:
            return JsonResponse({"error": exc.message}, status=403 if exc.code == "forbidden" else 400)
        stored.append(notebook_files.describe(row))
    status = 200 if stored else (413 if any("MB" in e for e in errors) else 400)
    return JsonResponse({"files": stored, "errors": errors, **({"error": " ".join(errors)} if errors else {})}, status=status)


@login_required
@require_http_methods(["GET", "HEAD"])
def notebook_file_download(request, notebook_id, path):
    """The current version of one file, for anyone who may view the notebook."""
    try:
        row, handle = notebook_files.open_file(notebook_id, request.user, path)
    except (notebook_files.FileError, operations.OperationError):
        raise Http404("No such file.") from None
    response = FileResponse(handle, as_attachment=True, filename=row.path.rsplit("/", 1)[-1])
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# --- personal API tokens (docs/api.md) --------------------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request):
    """The person's API tokens: make one (shown once, on the page this answers with) and list
    them (name, scopes, dates; never the token)."""
    form = ApiTokenForm(request.POST or None, owner=request.user)
    new_token = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():
                token, new_token = ApiToken.objects.issue(request.user, name=data["name"], scopes=data["scopes"], expires_in_days=data["expires_in_days"])
        except IntegrityError:  # the same name made a moment ago, in another request
            form.add_error("name", f"You already have a token called “{data['name']}”; revoke it or choose another name.")
        else:
            form = ApiTokenForm(owner=request.user)
    context = {"form": form, "new_token": new_token, "tokens": request.user.api_tokens.all(), "now": timezone.now()}
    response = render(request, "notebooks/api_tokens.html", context, status=400 if form.errors else 200)
    response["Cache-Control"] = "no-store"  # a page that shows a new token once is never kept
    return response


@login_required
@require_POST
def api_token_revoke(request, token_id):
    token = ApiToken.objects.filter(pk=token_id, owner=request.user).first()
    if token is None:
        raise Http404("You have no such API token.")
    token.revoke()
    messages.success(request, f"Revoked the token “{token.name}”: it no longer works.")
    return redirect("notebooks:api_tokens")


# --- runs with an id (docs/api.md#runs) ------------------------------------------------------

RUN_LOG_SHOWN = 200


def _run_for(user, notebook_id, run_id):
    notebook = _notebook_for(user, notebook_id)
    run = notebook.runs.select_related("started_by").filter(pk=run_id).first()
    if run is None:
        raise Http404("This run does not exist (its notebook's runs are listed on its Runs page).")
    run.notebook = notebook
    return run


@login_required
@require_http_methods(["GET", "HEAD"])
def notebook_runs(request, notebook_id):
    """The notebook's run log, newest first, for anyone who may view it."""
    notebook = _notebook_for(request.user, notebook_id)
    runs = list(notebook.runs.select_related("started_by").order_by("-created_at")[:RUN_LOG_SHOWN])
    return render(request, "notebooks/runs.html", {"notebook": notebook, "runs": runs, "shown": RUN_LOG_SHOWN})


@login_required
@require_http_methods(["GET", "HEAD"])
def run_detail(request, notebook_id, run_id):
    """A run: its status, parameters and each cell's status, and its report (run_export) framed."""
    run = _run_for(request.user, notebook_id, run_id)
    cells = [{"number": index, "status": r.get("status"), "line": next((line for line in (r.get("code") or "").splitlines() if line.strip()), "")[:80], "error": r.get("error")} for index, r in enumerate(run.results or [], start=1)]
    return render(request, "notebooks/run.html", {"notebook": run.notebook, "run": run, "cells": cells})


@login_required
@require_http_methods(["GET", "HEAD"])
def run_export(request, notebook_id, run_id):
    """The run as a static HTML report (exporting.run_to_html): shown inline (the run page frames
    it), `?download=1` as a file, `?code=1` with the code."""
    run = _run_for(request.user, notebook_id, run_id)
    response = HttpResponse(exporting.run_to_html(run, show_code=request.GET.get("code") == "1"), content_type=exporting.FORMATS["html"][0])
    filename = f"{slugify(run.notebook.name) or 'notebook'}-run-{str(run.pk)[:8]}.html"
    response["Content-Disposition"] = content_disposition_header(request.GET.get("download") == "1", filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = exporting.report_policy()
    return response
