"""``--json`` output: plain dicts of protocol data (DESIGN §8), for scripts and tests.

Times are epoch seconds; absent values are ``null``, never omitted, so a
consumer can rely on every key being there.
"""

from __future__ import annotations

from typing import Any, Final

from protocol import AttemptInfo, JobInfo, StatsReply, WorkerInfo

__all__ = ["attempt_json", "job_json", "stats_json", "worker_json"]

_SHOWN_ABOVE: Final = frozenset({"skipped", "stopped", "autoscaler"})  # stats_json's own keys


def job_json(job: JobInfo) -> dict[str, Any]:
    """A job: id, type, state, attempts, worker, exit_code, the three times, deps and the rest."""
    return {
        "id": job.id,
        "type": job.type,
        "data": job.data,
        "state": job.state,
        "priority": job.priority,
        "attempts": job.attempts,
        "tries": job.tries,
        "max_attempts": job.max_attempts,
        "worker": job.worker,
        "exit_code": job.exit_code,
        "error": job.error or None,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "deps": list(job.deps),
        "args": list(job.args),
        "delay_ms": job.delay_ms,
        "timeout_s": job.timeout_s,
        "memory_mb": job.memory_mb,
        "skills": list(job.skills),
        "dag": job.dag,
        "affinity": job.affinity,
        "restarts": job.restarts,
        "up": job.up,
        "runs": [attempt_json(run) for run in job.runs],
        "history": [
            {"start": step.start, "finish": step.finish, "stimulus": step.stimulus, "t": step.t} for step in job.history
        ],
    }


def attempt_json(run: AttemptInfo) -> dict[str, Any]:
    """One attempt: where and when it ran, how it ended, its outputs and what its logs lost."""
    return {
        "attempt": run.attempt,
        "state": run.state,
        "worker": run.worker,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "exit_code": run.exit_code,
        "error": run.error or None,
        "backoff_s": run.backoff_s,
        "outputs": list(run.outputs),
        "log_lost": run.log_lost,
        "truncated": run.truncated,
    }


def worker_json(worker: WorkerInfo) -> dict[str, Any]:
    """A worker: id, port, parent, load, capacity, skills, services, health and the rest."""
    return {
        "id": worker.id,
        "name": worker.name,
        "host": worker.host,
        "port": worker.port,
        "parent": worker.parent,
        "load": worker.load,
        "capacity": worker.capacity,
        "skills": list(worker.skills),
        "services": list(worker.services),
        "tasks": list(worker.tasks),
        "health": worker.health,
        "last_seen_s": worker.last_seen_s,
        "pid": worker.pid,
        "spawn_id": worker.spawn_id,
        "memory_mb": worker.memory_mb,
        "memory_used_mb": worker.memory_used_mb,
    }


def stats_json(stats: StatsReply) -> dict[str, Any]:
    """The counts (queued, delayed, blocked, dead, running, ...) and the workers."""
    return {
        "queued": stats.queued,
        "delayed": stats.delayed,
        "blocked": stats.blocked,
        "dead": stats.dead,
        "running": stats.running,
        "scheduled": stats.scheduled,
        "completed": stats.completed,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "skipped": stats.extra.get("skipped", 0),
        "stopped": stats.extra.get("stopped", 0),
        "uptime_s": stats.uptime_s,
        "workers": [worker_json(worker) for worker in stats.workers],
        "autoscaler": stats.extra.get("autoscaler", {"enabled": False}),
        # the WAL, recovery, live logs and payloads, under the names STATS shows them by
        "extra": {name: value for name, value in stats.extra.items() if name not in _SHOWN_ABOVE},
    }
