"""`briefbot run`: APScheduler decides *when* publishing and the digest run; nothing else.

APScheduler's defaults suit none of this (a run one second late is skipped, a DST fold fires a
cron job twice), so misfire grace, coalescing and overlap are set explicitly, a wrapper trigger
fires once per local wall-clock time, and the digest's catch-up after downtime is decided here
from the ledger (shared by every instance), not from APScheduler's in-memory job store.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from bot import watermark
from bot.config import ConfigError, Settings
from bot.ledger import Ledger, wall_clock
from bot.message import DeliveryKey
from bot.timing import (
    format_duration,
    parse_digest_schedule,
    parse_publish_interval,
    schedule_error,
    split_missed,
)

log = logging.getLogger("briefbot.run")

HEARTBEAT = timedelta(seconds=15)
SHUTDOWN_TIMEOUT = 60.0


def digest_trigger(value: str, tz: tzinfo) -> WallClockTrigger:
    """The APScheduler trigger for `schedule.digest`, whose syntax `timing` owns."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        fields = parse_digest_schedule(value)
        if len(value.split()) == 5:  # a crontab line: APScheduler reads its day numbers
            inner = CronTrigger.from_crontab(value.strip(), timezone=tz)
        else:
            inner = CronTrigger(**fields, timezone=tz)
    except ValueError as error:
        raise ConfigError(schedule_error(value, error)) from None
    return WallClockTrigger(inner, tz)


class WallClockTrigger(BaseTrigger):
    """Fires at most once per local wall-clock time: a DST fold repeats an hour, and a plain
    CronTrigger would fire in both copies of it. A time that does not exist (spring forward)
    fires just after the gap instead of being skipped, as CronTrigger already does."""

    def __init__(self, inner: Any, tz: tzinfo):
        self.inner = inner
        self.timezone = tz

    def _wall(self, moment: datetime) -> datetime:
        return moment.astimezone(self.timezone).replace(tzinfo=None, fold=0)

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        candidate = self.inner.get_next_fire_time(previous, now)
        for _ in range(4):  # a fold repeats one hour at most
            if candidate is None or previous is None or (
                self._wall(candidate) != self._wall(previous)
            ):
                return candidate
            # Past the repeated hour, counted in UTC (aware arithmetic would be wall-clock).
            now = candidate.astimezone(UTC) + timedelta(hours=1, seconds=1)
            candidate = self.inner.get_next_fire_time(None, now)
        return candidate

    def fire_times(self, after: datetime, until: datetime, limit: int = 10_000) -> list[datetime]:
        """Every fire time in (after, until], oldest first, bounded."""
        times: list[datetime] = []
        previous, now = None, after + timedelta(seconds=1)
        while len(times) < limit:
            moment = self.get_next_fire_time(previous, now)
            if moment is None or moment > until:
                break
            if moment > after:
                times.append(moment)
            previous, now = moment, moment.astimezone(UTC) + timedelta(seconds=1)
        return times

    def __str__(self) -> str:
        return f"wallclock[{self.inner}]"


class Daemon:
    """The jobs of `briefbot run`, callable with an explicit clock for tests."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = wall_clock):
        from bot.channels import open_channels
        from bot.publish import Publisher

        self.settings = settings
        self.clock = clock
        self.stop = threading.Event()
        self.idle = threading.Condition()
        self.running_jobs = 0
        schedule = settings.config.schedule
        self.publish_every = parse_publish_interval(schedule.publish)
        self.trigger = digest_trigger(schedule.digest, settings.tz)
        self.grace = schedule.digest_grace
        self.ledger = Ledger(settings.database_url, lease=settings.config.publish.lease,
                             clock=clock)
        self.started_at = clock()
        self.channels = open_channels(settings)
        self.publisher = Publisher(settings, self.ledger, self.channels,
                                   should_stop=self.stop.is_set)

    # -- jobs ------------------------------------------------------------------------

    def _job(self, name: str, work: Callable[[datetime], str]) -> str:
        with self.idle:
            self.running_jobs += 1
        now = self.clock()
        try:
            self.ledger.record_job(name, last_started_at=now)
            try:
                watermark.guard(self.settings, self.ledger)
                outcome = work(now)
                watermark.guard(self.settings, self.ledger)
            except ConfigError as error:  # a sent-log restored from a backup: say so, send none
                log.error("%s: %s", name, error)
                outcome = f"error: {error}"
            except Exception as error:  # noqa: BLE001 - a failed run must not kill the daemon
                log.exception("%s failed", name)
                outcome = f"error: {error}"
            self.ledger.record_job(name, last_finished_at=self.clock(), last_outcome=outcome)
            quiet = outcome.startswith(("nothing to send", "no digest due"))
            log.log(logging.DEBUG if quiet else logging.INFO, "%s: %s", name, outcome)
            return outcome
        finally:
            with self.idle:
                self.running_jobs -= 1
                self.idle.notify_all()

    def publish(self) -> str:
        return self._job("publish", lambda now: self.publisher.publish_due(now).summary())

    def digest(self) -> str:
        return self._job("digest", self._digest_due)

    def bounces(self) -> str:
        from bot.bounces import fetch

        return self._job("bounces", lambda now: fetch(self.settings).summary())

    def heartbeat(self) -> None:
        self.ledger.beat(started_at=self.started_at)

    def _digest_due(self, now: datetime) -> str:
        jobs = self.ledger.jobs().get("digest") or {}
        last = jobs.get("last_scheduled_at")
        if last is None:  # first start ever: begin from now, don't mail old periods
            self.ledger.record_job("digest", last_scheduled_at=now)
            return "first start: the next digest goes out at its next scheduled time"
        due, missed = split_missed(self.trigger.fire_times(last, now), now, self.grace)
        notes = [self._record_missed(moment) for moment in missed]
        if due is None:
            return "; ".join(notes) or "no digest due"
        self.ledger.record_job("digest", last_scheduled_at=due)
        return "; ".join([*notes, self.send_period(due, now)])

    def _record_missed(self, scheduled: datetime) -> str:
        from bot.timing import period_for

        period = period_for(scheduled, self.settings.tz, self.settings.config.email.period_days)
        reason = (f"missed: the daemon was not running at {scheduled:%Y-%m-%d %H:%M} UTC and came "
                  f"back after the {format_duration(self.grace)} grace; send it by hand with "
                  f"`briefbot digest send --period {period.label}`")
        self.ledger.mark_skipped(DeliveryKey(f"digest:{period.label}", "*"), reason)
        log.warning("digest %s %s", period.label, reason)
        return f"digest {period.label} {reason}"

    def send_period(self, scheduled: datetime, now: datetime) -> str:
        """Send the period that closed at `scheduled`, once, whoever else is sending it."""
        from bot.digest import send_digest
        from bot.timing import period_for

        period = period_for(scheduled, self.settings.tz, self.settings.config.email.period_days)
        key = DeliveryKey(f"digest:{period.label}", "*")
        state = self.ledger.open_campaign(key)
        if state not in ("claimed", "unknown"):
            return f"digest {period.label} already {state}"
        report = send_digest(self.settings, period, now=now, progress=False,
                             should_stop=self.stop.is_set)
        if self.stop.is_set():
            self.ledger.suspend_campaign(key, "interrupted by a shutdown; the next run resumes "
                                         "at the next unsent recipient")
        elif not report.pending:
            self.ledger.finish_campaign(key, note=report.summary())
        return f"digest {period.label}: {report.summary()}"

    # -- lifecycle ---------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read briefs and templates. Configuration changes need a restart."""
        from bot.briefs import BriefReader
        from bot.render.templates import _environment

        self.publisher.reader = BriefReader.from_settings(self.settings)
        _environment.cache_clear()
        log.info("reloaded briefs and templates (configuration changes need a restart)")

    def wait_idle(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.running_jobs == 0, timeout)

    def close(self) -> None:
        self.ledger.beat(started_at=self.started_at, stopped=True)
        for channel in self.channels.values():
            channel.close()
        self.ledger.close()


def run_daemon(settings: Settings) -> int:
    """Run until SIGTERM or Ctrl-C; then finish the delivery in flight and exit 0."""
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from bot.publish import check_can_publish

    check_can_publish(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per run is ours
    daemon = Daemon(settings)
    scheduler = BlockingScheduler(
        timezone=settings.tz,
        job_defaults={"coalesce": True, "max_instances": 1},
        executors={"default": {"type": "threadpool", "max_workers": 3}},
    )
    now = daemon.clock()
    interval = daemon.publish_every
    scheduler.add_job(daemon.publish, IntervalTrigger(seconds=interval.total_seconds(),
                                                      timezone=settings.tz),
                      id="publish", next_run_time=now, misfire_grace_time=None)
    scheduler.add_job(daemon.digest, daemon.trigger, id="digest",
                      misfire_grace_time=int(daemon.grace.total_seconds()) or None)
    scheduler.add_job(daemon.heartbeat, IntervalTrigger(seconds=HEARTBEAT.total_seconds()),
                      id="heartbeat", next_run_time=now)
    if settings.config.schedule.bounces:
        cfg = settings.config.bounces
        settings.secret(cfg.password_env, what="schedule.bounces: the [bounces] mailbox login")
        every = parse_publish_interval(settings.config.schedule.bounces)
        scheduler.add_job(daemon.bounces, IntervalTrigger(seconds=every.total_seconds(),
                                                          timezone=settings.tz),
                          id="bounces", next_run_time=now, misfire_grace_time=None)

    def record_next_runs(_event: Any = None) -> None:
        for job_id in ("publish", "digest", "bounces"):
            job = scheduler.get_job(job_id)
            if job is not None and job.next_run_time is not None:
                daemon.ledger.record_job(job_id, next_run_at=job.next_run_time)

    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED

    scheduler.add_listener(record_next_runs, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)

    def on_stop(signum: int, _frame: Any) -> None:
        if daemon.stop.is_set():  # a second Ctrl-C: the first one is already being honoured
            log.info("%s: already stopping; waiting for the delivery in flight",
                     signal.Signals(signum).name)
            return
        log.info("%s: finishing the delivery in flight, then stopping",
                 signal.Signals(signum).name)
        daemon.stop.set()
        if scheduler.running:
            scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: daemon.reload())
    # After the handlers: a SIGTERM during this catch-up stops it like any other send.
    daemon.digest()  # catch up on a digest missed while nobody was running
    log.info("briefbot running: publish every %s, digest %r (%s); Ctrl-C to stop",
             format_duration(interval), settings.config.schedule.digest,
             settings.config.timezone)
    if not daemon.stop.is_set():  # a Ctrl-C during the catch-up above already said stop
        scheduler.start()
    if not daemon.wait_idle(SHUTDOWN_TIMEOUT):
        log.error("a job did not finish within %ss; its delivery will be reconciled later",
                  SHUTDOWN_TIMEOUT)
    daemon.close()
    log.info("stopped")
    return 0
