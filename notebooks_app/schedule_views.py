"""The notebook's Schedules page (docs/api.md#schedules): its schedules, each with its next run
times and last run, for anyone who may view the notebook; for its owner and editors, forms that
add, change, pause or resume, and delete one.

What a schedule may be is schedules.py's, the API's own rules (through forms.ScheduleForm), and
saving is schedules.save_schedule, as for the API: this module only turns requests into those
calls and answers with the page, or a redirect and a message once something changed.
"""
import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from . import operations, permissions, schedules
from .forms import ScheduleForm
from .models import Notebook, NotebookSchedule
from .views import NOTEBOOK_NOT_FOUND

UPCOMING = 3  # the next run times shown for each schedule


def _notebook(user, notebook_id):
    """The notebook if `user` may view it (operations.get_notebook, as the API asks); a 404 otherwise."""
    try:
        return operations.get_notebook(Notebook.objects.select_related("owner"), notebook_id, user, action=permissions.VIEW)
    except operations.OperationError:
        raise Http404(NOTEBOOK_NOT_FOUND) from None


def _editors_only(view):
    """A change made on the page: `view(request, notebook, ...)` when the person may edit the
    notebook (permissions.EDIT, the API's check for schedule writes). A viewer gets a 403 page, a
    stranger a 404, and nothing changes."""

    @functools.wraps(view)
    def checked(request, notebook_id, **kwargs):
        notebook = _notebook(request.user, notebook_id)
        if not notebook.can_edit(request.user):
            context = {"notebook": notebook, "reason": permissions.REFUSALS[permissions.EDIT]}
            return render(request, "notebooks/forbidden.html", context, status=403)
        return view(request, notebook, **kwargs)

    return checked


def _schedule(notebook, schedule_id):
    schedule = notebook.schedules.filter(pk=schedule_id).first()
    if schedule is None:
        raise Http404("This schedule does not exist (any more): the notebook's Schedules page lists those it has.")
    return schedule


def _edit_form(notebook, schedule, *, inputs, data=None):
    # Each schedule's form on the page has ids of its own (the fields' names stay plain).
    return ScheduleForm(data, notebook=notebook, inputs=inputs, instance=schedule, auto_id=f"id_schedule_{schedule.pk}_%s")


def _submitted(request, notebook, form, *, verb, came_back):
    """The answer to a form's POST: its schedule saved (schedules.save_schedule, as the API saves),
    a message and a redirect to the page, so that a reload posts nothing again; or the page with
    the form as it came (`came_back`: _page's argument for it), each error next to its field."""
    if form.is_valid():
        try:
            schedules.save_schedule(form.instance, form.schedule_fields(), timezone.now())
        except schedules.InvalidSchedule as exc:  # the notebook's inputs changed since the form was checked
            form.add_error(None, f"{exc}.")
        else:
            messages.success(request, f"{verb} the schedule “{form.instance.name}”: {_next_run(form.instance)}.")
            return redirect("notebooks:schedules", notebook_id=notebook.pk)
    return _page(request, notebook, **{came_back: form})


def _next_run(schedule):
    """How a message tells when the schedule runs next."""
    if not schedule.enabled or schedule.next_run_at is None:
        return "paused"
    local = timezone.localtime(schedule.next_run_at, schedules.zone(schedule.timezone))
    return f"next run {local:%Y-%m-%d %H:%M} {schedule.timezone}"


def _page(request, notebook, *, add_form=None, editing=None):
    """The page; `add_form`, or `editing` (one schedule's bound form), come back with their errors (400)."""
    can_edit = notebook.can_edit(request.user)
    inputs = notebook.named_inputs() if can_edit else {}
    rows = []
    for schedule in notebook.schedules.select_related("owner", "last_run"):
        row = {"schedule": schedule, "upcoming": schedules.upcoming(schedule, UPCOMING)}
        if can_edit:
            row["form"] = editing if editing is not None and editing.instance.pk == schedule.pk else _edit_form(notebook, schedule, inputs=inputs)
            row["dropped"] = sorted(set(schedule.parameters) - set(inputs))  # a form's save leaves them out
        rows.append(row)
    if can_edit and add_form is None:
        add_form = ScheduleForm(notebook=notebook, inputs=inputs, instance=NotebookSchedule(notebook=notebook))
    context = {
        "notebook": notebook,
        "rows": rows,
        "can_edit": can_edit,
        "add_form": add_form,
        "time_zones": schedules.time_zones() if can_edit else (),
    }
    came_back = editing is not None or (add_form is not None and add_form.is_bound)
    return render(request, "notebooks/schedules.html", context, status=400 if came_back else 200)


@login_required
@require_http_methods(["GET", "HEAD"])
def notebook_schedules(request, notebook_id):
    """The notebook's schedules and when each runs next, with the forms that manage them for its
    owner and editors (the API does the same: docs/api.md#schedules)."""
    return _page(request, _notebook(request.user, notebook_id))


@login_required
@require_POST
@_editors_only
def schedule_add(request, notebook):
    """A new schedule of the notebook, owned by the person who adds it (its runs are theirs)."""
    form = ScheduleForm(request.POST, notebook=notebook, inputs=notebook.named_inputs(), instance=NotebookSchedule(notebook=notebook, owner=request.user))
    return _submitted(request, notebook, form, verb="Added", came_back="add_form")


@login_required
@require_POST
@_editors_only
def schedule_edit(request, notebook, schedule_id):
    """Change a schedule; its next time is computed again, its owner stays."""
    form = _edit_form(notebook, _schedule(notebook, schedule_id), inputs=notebook.named_inputs(), data=request.POST)
    return _submitted(request, notebook, form, verb="Saved", came_back="editing")


@login_required
@require_POST
@_editors_only
def schedule_enabled(request, notebook, schedule_id):
    """Pause (`enabled=false`) or resume (`enabled=true`) a schedule: the state asked for, so a
    second click changes nothing. Resuming computes its next time from now."""
    schedule = _schedule(notebook, schedule_id)
    wanted = request.POST.get("enabled")
    if wanted not in ("true", "false"):
        return HttpResponseBadRequest("Say enabled=true or enabled=false.", content_type="text/plain; charset=utf-8")
    try:
        schedules.save_schedule(schedule, {"enabled": wanted == "true"}, timezone.now())
    except schedules.InvalidSchedule as exc:  # a row whose cron was stored before it was checked
        messages.error(request, f"Could not resume “{schedule.name}”: {exc}. Change its cron expression or time zone.")
    else:
        messages.success(request, f"{'Resumed' if schedule.enabled else 'Paused'} the schedule “{schedule.name}”: {_next_run(schedule)}.")
    return redirect("notebooks:schedules", notebook_id=notebook.pk)


@login_required
@require_POST
@_editors_only
def schedule_delete(request, notebook, schedule_id):
    """Delete a schedule; its runs stay in the notebook's run log."""
    schedule = _schedule(notebook, schedule_id)
    schedule.delete()
    messages.success(request, f"Deleted the schedule “{schedule.name}”; its runs stay on the Runs page.")
    return redirect("notebooks:schedules", notebook_id=notebook.pk)
