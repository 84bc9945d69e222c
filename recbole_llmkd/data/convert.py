"""Former path of the job ``recbole_llmkd.jobs.convert``, kept working by ``cli.forward_to_jobs``."""
import sys

from recbole_llmkd.cli import forward_to_jobs, former_job_main

__getattr__ = forward_to_jobs("convert")
main = former_job_main("convert", "convert")  # python -m recbole_llmkd.data.convert

if __name__ == "__main__":
    sys.exit(main())
