"""The runner: many jobs through each model's account limits, results as async iterators.

A job's way, each stage in its owner's module (``_pipeline.JobPipeline.run`` reads as this line)::

    prepare -> reserve budget -> slot -> submit -> record -> poll -> settle -> save

Modules, each read in one sitting:

``_jobs``        the job types: ``Job``, ``Outcome``, ``JobHandle``, ``JobStatus``, the job state
``_service``     ``TaskService``, the calls the runner makes (``AsyncDashScope`` implements it)
``_pipeline``    the stages of one job, in order
``_reconcile``   what became of a submit that got no answer: the proof and adoption rules
``_queue_ahead`` which models keep a task waiting PENDING behind the running one, and when not
``_journaling``  what is written to the journal, and when
``_batch``       ``Batch``: one ``map`` call's task group, its outcomes, and stopping it
``_lifecycle``   ``AsyncTaskRunner``: its task group, entry points, one outcome per job

Each invariant has one owner:

| invariant | owner |
|---|---|
| exactly one ``Outcome`` per job; anything raised inside a job is that job's outcome | ``_lifecycle.AsyncTaskRunner._run_job`` |
| tasks in progress never exceed the limit | the limiter's slots (``_limits.SlotPool``, ``redis``) |
| tasks waiting PENDING never exceed ``queue_ahead``; a refused one turns it off for the model | the limiter's slots (``ModelLimits.slots``) and ``_queue_ahead.QueueAhead`` |
| submissions per second never exceed the rate; a 429 pauses the model for all | the limiter's pacer and cool-down (``_limits``) |
| polls, list reads and cancels stay inside the poll budget | ``Limiter.poll_turn``, taken once per request sent, retries included (``_poll_loop``; the client's ``meter=`` / ``before_page``) |
| one retry policy: what is transient per request kind, the backoff, the Retry-After cap | ``_retry`` |
| one poll loop, shared with ``client.wait()`` | ``_poll_loop.poll_until_done`` |
| resubmit only on proof (a complete list read after the grace period, of a window the service still keeps, shows nothing) | ``_reconcile.Reconciler`` |
| adopt only what can only be ours (no other unanswered submit could have made it) | ``_reconcile.Reconciler`` with the limiter's ``SubmitRecord`` (``_submits``) |
| a submit once sent is finished (its answer is awaited even when cancelled) | ``_pipeline.JobPipeline.submit`` |
| dropped means stopped: leaving ``async for`` stops the batch at once | ``_batch.Batch`` / ``BatchWork.drop`` |
| spending never passes the budget | ``_budget.BudgetLedger``, reserved in ``_pipeline`` |
| images billed for a task | ``TaskInfo.billed_images`` |
| a crashed batch resumes without paying twice | ``_journaling.JobJournal`` |
| every wait is bounded | ``_retry`` (Retry-After capped, clipped to the deadline), ``_poll_loop`` (poll deadline), ``_reconcile`` (grace + timeout), ``_pipeline.JobPipeline.submit`` (``throttle_timeout``) |
"""

from ._batch import Batch
from ._jobs import Job, JobHandle, JobStatus, Outcome
from ._lifecycle import AsyncTaskRunner
from ._reconcile import ReconcileRules
from ._service import TaskService

__all__ = [
    "AsyncTaskRunner",
    "Batch",
    "Job",
    "JobHandle",
    "JobStatus",
    "Outcome",
    "ReconcileRules",
    "TaskService",
]
