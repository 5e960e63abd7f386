"""Server-rendered pages: the notebook list and one notebook, readable without JavaScript."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from . import operations, permissions
from .constants import OUTPUT_HTML_STYLE
from .forms import NotebookForm, ShareForm
from .models import Notebook


def _notebook_for(user, notebook_id):
    """The notebook if `user` may view it; 404 otherwise, so its existence is never revealed."""
    notebook = Notebook.objects.visible_to(user).filter(pk=notebook_id).select_related("owner").first()
    if notebook is None:
        raise Http404("No such notebook.")
    return notebook


@login_required
@require_http_methods(["GET", "POST"])
def notebook_list(request):
    form = NotebookForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        notebook = operations.create_notebook(request.user, form.cleaned_data["name"])
        messages.success(request, f"Created “{notebook.name}”.")
        return redirect("notebooks:detail", notebook_id=notebook.pk)
    notebooks = Notebook.objects.visible_to(request.user).with_counts().select_related("owner")
    return render(request, "notebooks/list.html", {"notebooks": notebooks, "form": form}, status=400 if form.errors else 200)


@login_required
def notebook_detail(request, notebook_id):
    notebook = _notebook_for(request.user, notebook_id)
    return render(request, "notebooks/detail.html", _detail_context(request, notebook, ShareForm()))


def _detail_context(request, notebook, share_form):
    role = notebook.role_of(request.user)
    return {
        "notebook": notebook,
        "cells": notebook.cells.order_by("position"),
        "role": role,
        "can_edit": permissions.may(role, permissions.EDIT),
        "is_owner": permissions.may(role, permissions.SHARE),
        "members": notebook.memberships.select_related("user").order_by("user__username"),
        "share_form": share_form,
        "output_style": OUTPUT_HTML_STYLE,
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
