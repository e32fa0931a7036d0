#!/usr/bin/env bash
#########################################################
# Uncomment and change the variables below to your need:#
#########################################################
# Read by webui.sh on every start; A1111's variable names.

# Flags for the server, e.g. "--listen --api --port 7860" (see ./webui.sh --help)
#export COMMANDLINE_ARGS=""

# python3 executable (3.10, 3.11 or 3.12)
#python_cmd="python3"

# Folder of the virtual environment ("-" uses the python above without a virtual environment)
#venv_dir="venv"

# Command that installs torch into the virtual environment (run as "python -m $TORCH_COMMAND").
# The default gets PyPI's build: CUDA on Linux, Metal (MPS) on Apple silicon. For a CPU-only or ROCm
# build, use the command https://pytorch.org/get-started/locally/ gives, e.g.
#export TORCH_COMMAND="pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"

# git executable
#export GIT="git"

# Allow running as root (like passing -f to webui.sh)
#export EASEL_ALLOW_ROOT=1

###########################################
