import os

import launch

assert launch.is_installed("numpy")
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "installed.txt"), "w") as f:
    f.write("ok")
