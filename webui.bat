@echo off
rem Easel one-click start for Windows.
rem
rem   webui-user.bat          (sets your options, then calls this file)
rem   webui.bat [flags]       e.g. webui.bat --listen --api
rem
rem Makes venv\ with Python 3.10-3.12 and runs launch.py in it; launch.py installs torch
rem (TORCH_COMMAND) when it is missing, requirements.txt when it is not satisfied, runs enabled
rem extensions' install.py, then serves the UI at http://127.0.0.1:7860.

setlocal
cd /d "%~dp0"

if not defined PYTHON set "PYTHON=python"
if not defined VENV_DIR set "VENV_DIR=%~dp0venv"
if not exist tmp mkdir tmp

if "%VENV_DIR%"=="-" goto :skip_venv
if exist "%VENV_DIR%\Scripts\python.exe" goto :activate_venv

"%PYTHON%" -c "import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)"
if errorlevel 1 (
    echo Easel needs Python 3.10, 3.11 or 3.12: "%PYTHON%" is missing or another version.
    echo Install one from https://www.python.org/ or set PYTHON in webui-user.bat.
    goto :show_stdout_stderr
)
echo Creating virtual environment in %VENV_DIR%
"%PYTHON%" -m venv "%VENV_DIR%"
if errorlevel 1 (
    echo Unable to create the virtual environment in %VENV_DIR%.
    goto :show_stdout_stderr
)

:activate_venv
set "PYTHON=%VENV_DIR%\Scripts\python.exe"

:skip_venv
"%PYTHON%" -c "import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)"
if errorlevel 1 (
    echo Easel needs Python 3.10, 3.11 or 3.12: "%PYTHON%" is another version.
    goto :show_stdout_stderr
)

:launch
"%PYTHON%" -u launch.py %*
set "EXIT_CODE=%ERRORLEVEL%"
if exist tmp\restart (
    del /q tmp\restart
    echo Restarting...
    goto :launch
)
if not "%EXIT_CODE%"=="0" goto :show_stdout_stderr
exit /b 0

:show_stdout_stderr
echo.
echo Launch unsuccessful. Exiting.
pause
exit /b 1
