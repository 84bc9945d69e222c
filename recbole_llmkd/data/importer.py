"""Former path of the job ``recbole_llmkd.jobs.importer``, kept working by ``cli.forward_to_jobs``."""
import sys

from recbole_llmkd.cli import forward_to_jobs, former_job_main

__getattr__ = forward_to_jobs("importer")
main = former_job_main("import", "importer")  # python -m recbole_llmkd.data.importer

if __name__ == "__main__":
    sys.exit(main())
