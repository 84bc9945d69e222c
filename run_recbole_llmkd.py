#!/usr/bin/env python3
"""Run RecBole's models and recbole_llmkd's models: see ``run_recbole_llmkd.py --help``."""
import sys

from recbole_llmkd.cli import main

if __name__ == "__main__":
    sys.exit(main())
