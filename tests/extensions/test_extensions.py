"""The A1111 extension contract: loading, every Script hook, callbacks, built-in scripts, the API
bridge and extension management, on tiny models."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules import errors, extensions, script_callbacks, script_loading, scripts, shared
from modules.api import scripts_bridge
from modules.api.errors import ApiError
from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img, process_images

DATA = Path(__file__).parent / "data"


def _start(tmp_path: Path, tiny_models_dir: Path, *flags: str, exts: tuple[str, ...] = ("ext_demo", "ext_broken")):
    models = tmp_path / "models"
    if not models.exists():
        shutil.copytree(tiny_models_dir, models)
    ext_dir = tmp_path / "data" / "extensions"
    ext_dir.mkdir(parents=True, exist_ok=True)
    for name in exts:
        if not (ext_dir / name).exists():
            shutil.copytree(DATA / name, ext_dir / name)
    argv = ["--data-dir", str(tmp_path / "data"), "--models-dir", str(models), *flags]
    args, _parser = script_loading.parse_args_with_extensions(argv)
    shared.initialize(args)
    shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
    shared.opts.live_previews_enable = False
    extensions.clear_errors()
    script_loading.load_extensions()
    return args


@pytest.fixture
def easel(tmp_path: Path, tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    _start(tmp_path, tiny_models_dir, "--demo-ext-flag", "given")
    demo = sys.modules.get("demo")
    yield tmp_path
    script_callbacks.clear_callbacks()
    extensions.extensions.clear()
    if shared.model_manager is not None:
        shared.model_manager.close()
    del demo


def demo_events() -> list:
    module = scripts.loaded_modules[next(k for k in scripts.loaded_modules if k.endswith("demo.py"))]
    return module.EVENTS


def small(**kw) -> StableDiffusionProcessingTxt2Img:  # type: ignore[no-untyped-def]
    base = dict(prompt="a red circle", seed=1, steps=2, width=64, height=64, sampler_name="Euler", do_not_save_samples=True,
                do_not_save_grid=True)
    base.update(kw)
    return StableDiffusionProcessingTxt2Img(**base)


def with_runner(p, is_img2img: bool = False, script=None, script_args=None, alwayson=None):  # type: ignore[no-untyped-def]
    runner = scripts.runner_for(is_img2img)
    runner.prepare_api_run(p, script and runner.script(script), script_args or [], alwayson or {})
    return p


def test_loading_preload_settings_files_and_failing_extension(easel: Path) -> None:
    assert shared.cmd_opts.demo_ext_flag == "given"  # preload.py flag, parsed from the command line
    assert shared.opts.demo_ext_option == "hello"  # on_ui_settings + opts.add_option
    assert "demo_ext_option" in shared.opts.as_dict()
    assert "an option from a test" in shared.opts.data_labels["demo_ext_option"].comment_after
    names = [e.name for e in extensions.active()]
    assert names == ["ext_broken", "ext_demo"]
    broken = extensions.find_extension("ext_broken")
    assert broken is not None and "broken on purpose" in broken.errors[0].exception
    assert "Traceback" in broken.errors[0].traceback
    assert [Path(f).name for f in extensions.javascript_files()] == ["demo.js"]
    assert [Path(f).name for f in extensions.css_files()] == ["style.css"]
    tabs = script_callbacks.ui_tabs_callback()
    assert tabs == [(None, "Demo tab", "demo_tab")]
    titles = [s.title() for s in scripts.scripts_txt2img.alwayson_scripts]
    assert titles == ["Demo always on", "Demo broken hook"]
    assert scripts_bridge.script_names(False) == ["prompt matrix", "prompts from file or textbox", "x/y/z plot"]
    assert "sd upscale" in scripts_bridge.script_names(True)
    demo = scripts.scripts_txt2img.script("Demo always on")
    assert demo is not None and Path(demo.filename).parent.parent.name == "ext_demo"
    assert demo.elem_id("tag") == "script_txt2img_demo_always_on_tag"


def test_hooks_run_in_order_with_their_args_and_a_failing_hook_is_skipped(easel: Path) -> None:
    events = demo_events()
    events.clear()
    p = with_runner(small(batch_size=2, n_iter=1, do_not_save_grid=False), alwayson={"demo always on": [True, "abc"]})
    res = process_images(p)
    kinds = [e[0] for e in events if e[0] not in ("model_loaded", "image_saved")]
    assert kinds == ["setup", "before_process", "process", "before_process_batch", "process_batch",
                     "postprocess_batch", "postprocess_batch_list", "postprocess_image", "postprocess_image",
                     "image_grid", "postprocess"]
    assert events[0] == ("setup", True, "abc")
    assert ("postprocess_batch", (2, 3, 64, 64)) in events
    assert "Demo tag: abc" in res.infotexts[-1]
    # the broken hook was reported with its extension's name, and the generation finished
    assert any(e.what == "running process" for e in extensions.errors_of("ext_demo"))
    assert len(res.images) == 3


def test_model_loaded_and_app_started_and_image_saved(easel: Path) -> None:
    events = demo_events()
    events.clear()
    p = with_runner(small(do_not_save_samples=False))
    process_images(p)
    kinds = [e[0] for e in events]
    assert "model_loaded" in kinds and "image_saved" in kinds
    saved = next(e for e in events if e[0] == "image_saved")[1]
    assert Path(saved).is_file()
    script_callbacks.app_started_callback(None, "app")
    assert events[-1] == ("app_started", None, "app")


def test_cfg_denoiser_callback_changes_the_result(easel: Path) -> None:
    plain = np.asarray(process_images(small()).images[0], dtype=np.int16)
    steps = []

    def shift(params) -> None:  # type: ignore[no-untyped-def]
        steps.append((params.sampling_step, params.total_sampling_steps))
        params.x = params.x + 1.0

    script_callbacks.on_cfg_denoiser(shift)
    changed = np.asarray(process_images(small()).images[0], dtype=np.int16)
    assert steps == [(0, 2), (1, 2)]
    assert np.abs(plain - changed).mean() > 1

    def fails(params) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("broken denoiser callback")

    script_callbacks.remove_callbacks_for_function(shift)
    script_callbacks.on_cfg_after_cfg(fails)
    again = np.asarray(process_images(small()).images[0], dtype=np.int16)
    assert np.array_equal(plain, again)  # a failing callback is reported and skipped
    assert any("cfg_after_cfg" in e["message"] for e in errors.get_exceptions())


def test_prompt_matrix(easel: Path) -> None:
    p = with_runner(small(prompt="a cat | red | blue"), script="Prompt matrix", script_args=[])
    res = process_images(p)
    assert res.all_prompts == ["a cat", "a cat, red", "a cat, blue", "a cat, red, blue"]
    assert len(res.images) == 5 and res.index_of_first_image == 1
    grid = res.images[0]
    assert grid.width > 128 and grid.height > 128  # 2x2 cells plus legends


def test_prompts_from_file(easel: Path) -> None:
    text = 'a dog\n--prompt "a tree" --negative_prompt "ugly" --steps 3 --seed 7 --width 72 --cfg_scale 5\n'
    p = with_runner(small(prompt=""), script="Prompts from file or textbox", script_args=[False, False, "start", text])
    res = process_images(p)
    assert res.all_prompts == ["a dog", "a tree"]
    assert res.images[1].size == (72, 64)
    assert "Steps: 3" in res.infotexts[1] and "Seed: 7" in res.infotexts[1] and "ugly" in res.infotexts[1]
    with pytest.raises(ValueError, match="--nope"):
        process_images(with_runner(small(), script="Prompts from file or textbox", script_args=[False, False, "start",
                                                                                                 "--nope 1"]))


def test_xyz_plot(easel: Path) -> None:
    args = ["Steps", "1-2", None, "CFG Scale", "3,7", None, "Nothing", "", None, True, True]
    p = with_runner(small(seed=5), script="X/Y/Z plot", script_args=args)
    res = process_images(p)
    assert len(res.images) == 1 + 4  # the grid, then each cell (Include Sub Images)
    assert res.images[0].width > 128 and res.images[0].height > 128
    info = res.infotexts[0]
    assert "Script: X/Y/Z plot" in info and "X Type: Steps" in info and 'X Values: 1-2,' in info and 'Y Values: "3,7"' in info
    assert "Y Type: CFG Scale" in info
    assert "Steps: 2" in res.infotexts[2] and "CFG scale: 3" in res.infotexts[2]


def test_xyz_value_syntax() -> None:
    sys.path.insert(0, str(Path(scripts.script_path) / "scripts"))
    try:
        import xyz_grid
    finally:
        sys.path.pop(0)
    assert xyz_grid.expand_int(xyz_grid.split_values("1-5")) == [1, 2, 3, 4, 5]
    assert xyz_grid.expand_int(xyz_grid.split_values("1-10 (+2)")) == [1, 3, 5, 7, 9]
    assert xyz_grid.expand_int(xyz_grid.split_values("1-10 [4]")) == [1, 4, 7, 10]
    assert xyz_grid.expand_float(xyz_grid.split_values("0.25-1 [4], 2")) == [0.25, 0.5, 0.75, 1.0, 2.0]
    assert xyz_grid.split_values('a, "b, c", d') == ["a", "b, c", "d"]


def test_sd_upscale(easel: Path) -> None:
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    p = StableDiffusionProcessingImg2Img(prompt="x", init_images=[init], width=64, height=64, steps=2, seed=3,
                                         denoising_strength=0.3, sampler_name="Euler", do_not_save_samples=True)
    with_runner(p, is_img2img=True, script="SD upscale", script_args=[None, 32, "Lanczos", 2.0])
    res = process_images(p)
    assert res.images[0].size == (128, 128)
    assert "SD upscale upscaler: Lanczos" in res.infotexts[0] and "SD upscale overlap: 32" in res.infotexts[0]


def test_api_bridge_resolves_titles_and_lays_out_args(easel: Path) -> None:
    selection = scripts_bridge.resolve_scripts("x/y/z PLOT", [4, "1-2"], {"DEMO ALWAYS ON": {"args": [True]}},
                                               is_img2img=False)
    p = small()
    scripts_bridge.attach(p, selection)
    runner = scripts.scripts_txt2img
    script = runner.script("X/Y/Z plot")
    assert p.script_args[0] == runner.selectable_scripts.index(script) + 1
    assert p.script_args[script.args_from:script.args_from + 3] == [4, "1-2", []]
    demo = runner.script("Demo always on")
    assert p.script_args[demo.args_from:demo.args_to] == [True, "default-tag"]
    with pytest.raises(ApiError) as e:
        scripts_bridge.resolve_scripts("nope", [], {}, is_img2img=False)
    assert e.value.status == 422 and "X/Y/Z plot" in str(e.value.detail)
    info = {i["name"]: i for i in scripts_bridge.script_info()}
    assert info["demo always on"]["is_alwayson"] is True
    assert info["demo always on"]["args"][1] == {"label": "Demo tag", "value": "default-tag", "minimum": None,
                                                  "maximum": None, "step": None, "choices": None}


def _bare_repo(tmp_path: Path) -> Path:
    work = tmp_path / "src"
    shutil.copytree(DATA / "ext_installable", work)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    bare = tmp_path / "ext_installable.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def test_install_from_file_url_enable_disable_and_update_check(tmp_path: Path, tiny_models_dir: Path) -> None:
    _start(tmp_path, tiny_models_dir, exts=())
    bare = _bare_repo(tmp_path)
    ext = extensions.install_from_url(bare.as_uri(), dirname="installed-ext")
    assert Path(ext.path, "scripts", "hello.py").is_file()
    assert Path(ext.path, "installed.txt").read_text() == "ok"  # install.py ran
    ext.read_info_from_repo()
    assert ext.remote == bare.as_uri() and len(ext.commit_hash or "") == 40
    assert extensions.check_updates() == {"installed-ext": "latest"}
    extensions.set_enabled("installed-ext", False)
    saved = (tmp_path / "data" / "config.json").read_text()
    assert '"installed-ext"' in saved and not extensions.find_extension("installed-ext").enabled
    with pytest.raises(extensions.ExtensionManagementError, match="exists already"):
        extensions.install_from_url(bare.as_uri(), dirname="installed-ext")


def test_management_refused_when_reachable_from_other_hosts(tmp_path: Path, tiny_models_dir: Path) -> None:
    _start(tmp_path, tiny_models_dir, "--listen", exts=())
    with pytest.raises(extensions.ExtensionAccessError, match="enable-insecure-extension-access"):
        extensions.install_from_url("file:///nowhere.git")
    with pytest.raises(extensions.ExtensionAccessError):
        extensions.set_enabled("x", False)
    _start(tmp_path, tiny_models_dir, "--listen", "--enable-insecure-extension-access", exts=())
    extensions.check_access()


def test_index_unreachable_gives_a_clear_message(tmp_path: Path) -> None:
    result = extensions.load_index((tmp_path / "missing-index.json").as_uri())
    assert not result.ok and "could not read the extension index" in result.error
    good = tmp_path / "index.json"
    good.write_text('{"extensions": [{"name": "A", "url": "https://example.invalid/a.git"}]}')
    result = extensions.load_index(good.as_uri())
    assert result.ok and result.extensions[0]["name"] == "A" and result.extensions[0]["installed"] is False
