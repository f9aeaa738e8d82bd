"""The job queue (RQ over Redis) and the job kinds workers run."""

from cl_server.queue.jobs import JobConflict, JobQueue, JobRejected
from cl_server.queue.kinds import KINDS, JobCancelled, JobContext, job_kind
from cl_server.queue.worker import WorkerSettings, run_worker

# Job kinds defined elsewhere register themselves on import: the CL update job.
import cl_server.envelope.job  # noqa: E402,F401  (registers "cl_update")
import cl_server.envelope.rollout  # noqa: E402,F401  (registers "cl_promote")

__all__ = ["KINDS", "JobCancelled", "JobConflict", "JobContext", "JobQueue", "JobRejected",
           "WorkerSettings", "job_kind", "run_worker"]
