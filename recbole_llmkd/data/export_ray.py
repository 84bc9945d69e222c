"""Former path of the job ``recbole_llmkd.jobs.export_ray``, kept working by ``cli.forward_to_jobs``."""
from recbole_llmkd.cli import forward_to_jobs

__getattr__ = forward_to_jobs("export_ray")
