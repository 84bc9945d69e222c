"""Former path of the job ``recbole_llmkd.jobs.export``, kept working by ``cli.forward_to_jobs``."""
import sys

from recbole_llmkd.cli import forward_to_jobs, former_job_main

__getattr__ = forward_to_jobs("export")
main = former_job_main("export", "export")  # python -m recbole_llmkd.data.export

if __name__ == "__main__":
    sys.exit(main())
