@echo off
rem Your settings for Easel on Windows; A1111's variable names. Start Easel by running this file.

rem Python 3.10, 3.11 or 3.12 (a path, or a command on PATH)
set PYTHON=
rem git executable
set GIT=
rem Folder of the virtual environment ("-" uses PYTHON without a virtual environment)
set VENV_DIR=
rem Flags for the server, e.g. --listen --api --port 7860
set COMMANDLINE_ARGS=
rem Command that installs torch (run as "python -m %TORCH_COMMAND%"). PyPI's default build for Windows is
rem CPU-only; for an NVIDIA GPU use the command https://pytorch.org/get-started/locally/ gives, e.g.
rem set TORCH_COMMAND=pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128

call webui.bat %*
