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
        "refresh_sd_model_checkpoint": "Rescan the model folders",
        "txt2img_style_apply": "Apply all selected styles to prompts",
        "img2img_style_apply": "Apply all selected styles to prompts",
        "txt2img_styles_edit_button": "Edit styles",
        "img2img_styles_edit_button": "Edit styles",
        "txt2img_edit_style_save": "Save the current prompt and negative prompt as this style",
        "img2img_edit_style_save": "Save the current prompt and negative prompt as this style",
        "txt2img_edit_style_delete": "Delete this style",
        "img2img_edit_style_delete": "Delete this style"
    };
    ["txt2img", "img2img"].forEach(function (tab) {
        ["lora", "textual_inversion", "checkpoints"].forEach(function (page) {
            hints[tab + "_" + page + "_extra_refresh"] = "Rescan the folder";
        });
        hints[tab + "_open_folder"] = "Open images output directory";
        hints["save_" + tab] = "Save the image to a dedicated directory (log/images)";
        hints["save_zip_" + tab] = "Save the images to a dedicated directory and pack them into a zip archive";
    });

    // Gradio's dropdown has no placeholder of its own; an empty Styles box should still say what it is.
    var placeholders = {
        "txt2img_styles": "Styles",
        "img2img_styles": "Styles",
        "txt2img_edit_style_name": "Style name",
        "img2img_edit_style_name": "Style name"
    };

    function applyHints() {
        Object.keys(hints).forEach(function (id) {
            var el = document.getElementById(id);
            if (el && !el.title) {
                el.title = hints[id];
            }
        });
        Object.keys(placeholders).forEach(function (id) {
            var input = document.querySelector("#" + id + " input");
            if (input && !input.placeholder) {
                input.placeholder = placeholders[id];
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
