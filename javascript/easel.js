// Page helpers: Ctrl+Enter generates, tool buttons get their hints as tooltips.
(function () {
    "use strict";

    var hints = {
        "txt2img_paste": "Read generation parameters from prompt or last generation if prompt is empty into user interface.",
        "img2img_paste": "Read generation parameters from prompt or last generation if prompt is empty into user interface.",
        "txt2img_clear_prompt": "Clear prompt",
        "img2img_clear_prompt": "Clear prompt",
        "txt2img_random_seed": "Set seed to -1, which will cause a new random number to be used every time",
        "img2img_random_seed": "Set seed to -1, which will cause a new random number to be used every time",
        "txt2img_reuse_seed": "Reuse seed from last generation",
        "img2img_reuse_seed": "Reuse seed from last generation",
        "txt2img_res_switch_btn": "Switch width/height",
        "img2img_res_switch_btn": "Switch width/height",
        "refresh_sd_model_checkpoint": "Rescan the model folders"
    };

    function applyHints() {
        Object.keys(hints).forEach(function (id) {
            var el = document.getElementById(id);
            if (el && !el.title) {
                el.title = hints[id];
            }
        });
    }

    function activeTab() {
        var t2i = document.getElementById("tab_txt2img");
        if (t2i && t2i.offsetParent !== null) {
            return "txt2img";
        }
        var i2i = document.getElementById("tab_img2img");
        if (i2i && i2i.offsetParent !== null) {
            return "img2img";
        }
        return null;
    }

    document.addEventListener("keydown", function (e) {
        var isEnter = e.key === "Enter" || e.keyCode === 13;
        if (!isEnter || !(e.ctrlKey || e.metaKey)) {
            return;
        }
        var tab = activeTab();
        if (!tab) {
            return;
        }
        var button = document.getElementById(tab + "_generate");
        if (button && button.offsetParent !== null) {
            e.preventDefault();
            button.click();
        }
    });

    new MutationObserver(applyHints).observe(document.documentElement, {childList: true, subtree: true});
})();
