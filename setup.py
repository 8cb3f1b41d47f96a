from setuptools import find_packages, setup


setup(
    name="vapi-trl",
    version="0.1.0",
    description="VA-π (Variational Policy Alignment) post-training for autoregressive image generators, as a TRL trainer.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["vapi_trl", "vapi_trl.*"]),
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4,<2.15",
        "transformers>=5.23,<5.24",
        "accelerate>=1.15,<1.16",
        # TRL changes the private methods VAPiTrainer overrides between minor releases: pin the tested minor.
        "trl>=1.16,<1.17",
        "peft>=0.21,<0.22",
        "datasets>=4",
        "lpips>=0.1.4",
        "diffusers>=0.42",
        "safetensors>=0.4",
        "scipy",
        "pillow",
        "tqdm",
    ],
    extras_require={
        # IS and the default `vapi-trl fid` evaluator
        "eval": ["torch-fidelity>=0.4,<0.5"],
        "docs": ["mkdocs>=1.6,<1.7", "mkdocs-material>=9.5,<10", "mkdocstrings>=0.29", "mkdocstrings-python>=1.16"],
        "dev": [
            "pytest>=8",
            "ruff>=0.17,<0.18",
            "hypothesis>=6.100",
            "tensorboard",
            "matplotlib",
            "torch-fidelity>=0.4,<0.5",
            "mkdocs>=1.6,<1.7",
            "mkdocs-material>=9.5,<10",
            "mkdocstrings>=0.29",
            "mkdocstrings-python>=1.16",
        ],
    },
    entry_points={"console_scripts": ["vapi-trl = vapi_trl.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
