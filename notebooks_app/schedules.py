"""Notebook schedules (models.NotebookSchedule, docs/api.md#schedules): when a cron expression
fires next in its time zone, `tick(now)` that turns due schedules into runs with parameters
exactly once across every kernel worker and host, and what a failed scheduled run sends (an
email to the schedule's owner, a signed POST to its webhook).

`tick` claims due rows in PostgreSQL (`FOR UPDATE SKIP LOCKED`) and advances `next_run_at` in the
same transaction; the unique (schedule, due_at) of runs is the backstop. It runs nothing itself:
each run goes to its notebook's kernel worker as any run with parameters (run_store.send_run).
"""
import datetime
import functools
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

from . import run_store
from .kernel.parameters import InvalidParameters, resolve
from .constants import RUN_ERROR, RUN_KIND_COPY, RUN_QUEUED, RUN_RUNNING, RUN_SOURCE_SCHEDULE, RUN_TIMED_OUT
from .models import NotebookRun, NotebookSchedule

logger = logging.getLogger(__name__)

TICK_BATCH = 100  # due schedules one tick claims (the rest wait for the next tick)
WEBHOOK_TIMEOUT = 5.0  # seconds per webhook attempt
SIGNATURE_HEADER = "X-Notebook-Signature"  # "sha256=<hex HMAC-SHA256 of the body with the schedule's secret>"
NOTIFIED = frozenset({RUN_ERROR, RUN_TIMED_OUT})  # a scheduled run ending so tells its owner


class InvalidSchedule(ValueError):
    """A cron expression, time zone or parameters that cannot be used; the message says why."""


def zone(name):
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"{name!r} is not a time zone (use a name such as Europe/Paris or UTC)") from None


def check_cron(expression):
    if not isinstance(expression, str) or not croniter.is_valid(expression) or len(expression.split()) != 5:
        raise InvalidSchedule(f"{expression!r} is not a cron expression of five fields (minute hour day month weekday), such as '0 9 * * 1-5'")
    return expression


def next_time(expression, timezone_name, after):
    """The first time after `after` (aware) that `expression` fires on the clock of
    `timezone_name`, in UTC."""
    local = after.astimezone(zone(timezone_name))
    return croniter(check_cron(expression), local).get_next(datetime.datetime).astimezone(datetime.timezone.utc)


def upcoming(schedule, count=3):
    """The schedule's next `count` times (aware, UTC), from its `next_run_at`; [] while it is paused.
    Fewer when its stored cron or time zone no longer reads (a row changed outside save_schedule)."""
    if not schedule.enabled or schedule.next_run_at is None:
        return []
    times = [schedule.next_run_at]
    try:
        while len(times) < count:
            times.append(next_time(schedule.cron, schedule.timezone, times[-1]))
    except InvalidSchedule:
        logger.warning("schedule %s: %r in %r does not read as a cron expression in a time zone", schedule.pk, schedule.cron, schedule.timezone)
    return times


@functools.cache
def time_zones():
    """The IANA names zone() accepts, sorted (what the Schedules page offers)."""
    return sorted(available_timezones())


def tick(now):
    """Runs for every enabled schedule due at `now`: each due time fires once, whichever workers
    tick at once. A schedule whose last run is still queued or running is skipped (logged) and
    moves on to its next time. The runs made (already sent to their workers)."""
    made = []
    with transaction.atomic():
        due = list(
            NotebookSchedule.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(enabled=True, next_run_at__lte=now)
            .select_related("last_run")
            .order_by("next_run_at")[:TICK_BATCH]
        )
        for schedule in due:
            due_at = schedule.next_run_at
            schedule.next_run_at = next_time(schedule.cron, schedule.timezone, now)  # missed times are not caught up
            previous = schedule.last_run
            if previous is not None and previous.status in (RUN_QUEUED, RUN_RUNNING):
                logger.info("schedule %s (%s): due at %s skipped, its run %s is still %s", schedule.pk, schedule.name, due_at.isoformat(), previous.pk, previous.status)
                schedule.save(update_fields=["next_run_at"])
                continue
            try:
                with transaction.atomic():
                    run = NotebookRun.objects.create(
                        notebook_id=schedule.notebook_id, started_by_id=schedule.owner_id, source=RUN_SOURCE_SCHEDULE, kind=RUN_KIND_COPY,
                        parameters=schedule.parameters, schedule=schedule, due_at=due_at,
                    )
            except IntegrityError:  # this due time fired already (the backstop of the lock)
                schedule.save(update_fields=["next_run_at"])
                continue
            schedule.last_run = run
            schedule.save(update_fields=["next_run_at", "last_run"])
            made.append(run)
    for run in made:
        try:
            run_store.send_run(run)
        except Exception:  # noqa: BLE001 - the run is marked error by send_run; the others go on
            logger.exception("scheduled run %s could not be sent to its kernel worker", run.pk)
    return made


# --- a failed scheduled run ------------------------------------------------------------------------


def notify_failure(run_id):
    """A scheduled run ended `error` or `timed_out`: its schedule's owner gets an email, and its
    webhook (if any) a signed POST, retried once."""
    run = NotebookRun.objects.select_related("schedule__owner", "notebook").filter(pk=run_id).first()
    if run is None or run.schedule is None or run.status not in NOTIFIED:
        return
    schedule = run.schedule
    subject = f"Scheduled run of “{run.notebook.name}” {run.get_status_display().lower()}: {schedule.name}"
    body = f"The run due at {run.due_at:%Y-%m-%d %H:%M} UTC ended {run.status}.\n\n{run.error}\n\nRun: /notebooks/{run.notebook_id}/runs/{run.pk}/\n"
    if schedule.owner.email:
        try:
            send_mail(subject, body, None, [schedule.owner.email])
        except Exception:  # noqa: BLE001 - the webhook still goes
            logger.exception("could not email the owner of schedule %s", schedule.pk)
    if schedule.webhook_url:
        post_webhook(schedule, webhook_body(run))


def webhook_body(run):
    return {
        "event": "run.failed",
        "runId": str(run.pk),
        "notebookId": str(run.notebook_id),
        "scheduleId": run.schedule_id,
        "status": run.status,
        "error": run.error,
        "dueAt": run.due_at.isoformat() if run.due_at else None,
        "url": f"/notebooks/{run.notebook_id}/runs/{run.pk}/",
    }


def signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_webhook(schedule, payload, attempts=2):
    """POST `payload` as JSON, signed; one retry after a failure (an error or a non-2xx answer).
    Whether it was delivered."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(schedule.webhook_secret, body), "User-Agent": "reactive-notebooks-webhook"}
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(schedule.webhook_url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310 - the owner's own URL
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, OSError) as exc:
            logger.warning("webhook of schedule %s, attempt %d: %s", schedule.pk, attempt, exc)
    return False


# --- managing schedules (the API and the Schedules page, docs/api.md#schedules) -----------------


def problems(notebook, fields):
    """{field: why} of what cannot be used in `fields` (name, cron, timezone, parameters, enabled,
    webhook_url: any of them); {} when all can. The field is "cron", "timezone",
    "parameters.<input name>" for one parameter, or "parameters" when they are no object. The one
    home of these rules: the API (check_fields) and the Schedules page (forms.ScheduleForm) ask it."""
    found = {}
    for field, check in (("cron", check_cron), ("timezone", zone)):
        if field in fields:
            try:
                check(fields[field])
            except InvalidSchedule as exc:
                found[field] = str(exc)
    if "parameters" in fields:
        inputs, parameters = notebook.named_inputs(), fields["parameters"]
        # One at a time, so that each problem is told with its input's name (a form shows it there).
        singly = {f"parameters.{name}": {name: value} for name, value in parameters.items()} if isinstance(parameters, dict) else {"parameters": parameters}
        for field, checked in singly.items():
            try:
                resolve(inputs, checked)
            except InvalidParameters as exc:
                found[field] = str(exc)
    return found


def check_fields(notebook, fields):
    """`fields` checked (problems()); InvalidSchedule says everything that is wrong."""
    found = problems(notebook, fields)
    if found:
        raise InvalidSchedule("; ".join(found.values()))


def save_schedule(schedule, fields, now):
    """Create or change `schedule` with `fields` (checked); its next time computed again."""
    check_fields(schedule.notebook, fields)
    for name, value in fields.items():
        setattr(schedule, name, value)
    schedule.next_run_at = next_time(schedule.cron, schedule.timezone, now) if schedule.enabled else None
    schedule.save()
    return schedule
