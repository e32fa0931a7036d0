"""The built-in settings, with A1111's keys, defaults and sections."""

from __future__ import annotations

from modules import localization
from modules.options import OptionInfo, options_section

SAMPLE_FORMATS = ["png", "jpg", "jpeg", "webp"]

options_templates: dict[str, OptionInfo] = {}


def _tab_choices(key: str, hideable: bool = False) -> dict[str, list[str]]:
    from modules.ui.tab_order import choices  # the page's tabs are known once it is built

    return choices(key, hideable=hideable)


options_templates.update(options_section(("saving-images", "Saving images/grids"), {
    "samples_save": OptionInfo(True, "Always save all generated images"),
    "samples_format": OptionInfo("png", "File format for images", component_args={"choices": SAMPLE_FORMATS}),
    "samples_filename_pattern": OptionInfo("", "Images filename pattern (empty: [seed])"),
    "save_images_add_number": OptionInfo(True, "Add number to filename when saving"),
    "grid_save": OptionInfo(True, "Always save all generated image grids"),
    "grid_format": OptionInfo("png", "File format for grids", component_args={"choices": SAMPLE_FORMATS}),
    "grid_extended_filename": OptionInfo(False, "Add extended info (seed, prompt) to filename when saving grid"),
    "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),
    "n_rows": OptionInfo(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size",
                         component_args={"minimum": -1, "maximum": 16, "step": 1}),
    "grid_background_color": OptionInfo("#ffffff", "Background color for image grids"),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files"),
    "save_txt": OptionInfo(False, "Create a text file with infotext next to every image"),
    "jpeg_quality": OptionInfo(80, "Quality for saved jpeg and webp images",
                               component_args={"minimum": 1, "maximum": 100, "step": 1}),
    "webp_lossless": OptionInfo(False, "Use lossless compression for webp images"),
    "return_grid": OptionInfo(True, "Show grid in gallery"),
    "grid_prevent_empty_spots": OptionInfo(False, "Prevent empty spots in grid (when set to autodetect)"),
    "grid_zip_filename_pattern": OptionInfo("", "Archive filename pattern (empty: [datetime]_[[model_name]]_[seed]-[seed_last])"),
    "save_selected_only": OptionInfo(True, "When using 'Save' button, only save a single selected image"),
    "directories_max_prompt_words": OptionInfo(8, "Max prompt words for [prompt_words] pattern",
                                               component_args={"minimum": 1, "maximum": 20, "step": 1}),
}))

options_templates.update(options_section(("saving-paths", "Paths for saving"), {
    "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below"),
    "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images"),
    "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images"),
    "outdir_extras_samples": OptionInfo("outputs/extras-images", "Output directory for images from extras tab"),
    "outdir_grids": OptionInfo("", "Output directory for grids; if empty, defaults to two directories below"),
    "outdir_txt2img_grids": OptionInfo("outputs/txt2img-grids", "Output directory for txt2img grids"),
    "outdir_img2img_grids": OptionInfo("outputs/img2img-grids", "Output directory for img2img grids"),
    "outdir_save": OptionInfo("log/images", "Directory for saving images using the Save button"),
    "outdir_init_images": OptionInfo("outputs/init-images", "Directory for saving init images when using img2img"),
}))

options_templates.update(options_section(("saving-to-dirs", "Saving to a directory"), {
    "save_to_dirs": OptionInfo(True, "Save images to a subdirectory"),
    "grid_save_to_dirs": OptionInfo(True, "Save grids to a subdirectory"),
    "directories_filename_pattern": OptionInfo("[date]", "Directory name pattern"),
    "use_save_to_dirs_for_ui": OptionInfo(False, "When using \"Save\" button, save images to a subdirectory"),
}))

options_templates.update(options_section(("sd", "Stable Diffusion"), {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", infotext="Model hash"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time",
                                       component_args={"minimum": 1, "maximum": 10, "step": 1}),
    "sd_checkpoints_keep_in_cpu": OptionInfo(True, "Only keep one model on device (others are parked in RAM)"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", component_args={"minimum": 1, "maximum": 12, "step": 1},
                                           infotext="Clip skip"),
    "emphasis": OptionInfo("Original", "Emphasis mode", component_args={"choices": ["Original", "No norm", "Ignore"]},
                           infotext="Emphasis"),
    "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit",
                                          component_args={"minimum": 0, "maximum": 74, "step": 1}),
    "randn_source": OptionInfo("CPU", "Random number generator source", component_args={"choices": ["CPU"]},
                               infotext="RNG"),
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies"),
    "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img",
                                           component_args={"minimum": 0.0, "maximum": 1.5, "step": 0.001}),
    "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength",
                                         component_args={"minimum": 0.0, "maximum": 1.0, "step": 0.01},
                                         infotext="Conditional mask weight"),
    "upscaler_for_img2img": OptionInfo(None, "Upscaler for img2img"),
    "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts of the input image with this color"),
}))

options_templates.update(options_section(("extra_networks", "Extra Networks"), {
    "sd_lora": OptionInfo("None", "Add network to prompt"),
    "lora_preferred_name": OptionInfo("Alias from file", "When adding to prompt, refer to Lora by",
                                      component_args={"choices": ["Alias from file", "Filename"]}),
    "lora_add_hashes_to_infotext": OptionInfo(True, "Add Lora hashes to infotext"),
    "lora_in_memory_limit": OptionInfo(0, "Number of Lora networks to keep cached in memory",
                                       component_args={"minimum": 0, "maximum": 100, "step": 1}),
    "textual_inversion_add_hashes_to_infotext": OptionInfo(True, "Add Textual Inversion hashes to infotext"),
    "infotext_styles": OptionInfo("Apply if any", "Infer styles from prompts of pasted infotext",
                                  component_args={"choices": ["Ignore", "Apply", "Discard", "Apply if any"]}),
}))

options_templates.update(options_section(("vae", "VAE"), {
    "sd_vae": OptionInfo("Automatic", "SD VAE", infotext="VAE"),
    "sd_vae_overrides_per_model_preferences": OptionInfo(True, "Selected VAE overrides per-model preferences"),
    "auto_vae_precision": OptionInfo(True, "Automatically revert VAE to 32-bit floats when it produces NaNs"),
}))

options_templates.update(options_section(("sampler-params", "Sampler parameters"), {
    "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", infotext="Eta"),
    "eta_ddim": OptionInfo(0.0, "Eta for DDIM", infotext="Eta DDIM"),
    "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", infotext="ENSD"),
}))

options_templates.update(options_section(("user-interface", "User interface"), {
    # Choices are read when the Settings tab is built, so newly added files show up after a reload.
    "localization": OptionInfo(localization.NONE, "Localization",
                               component_args=lambda: {"choices": localization.names()},
                               onchange=localization.notify_changed).needs_reload_ui(),
    # The page is built once per server start, so these two apply after a restart.
    "ui_tab_order": OptionInfo([], "UI tab order", component_args=lambda: _tab_choices("ui_tab_order")).needs_restart(),
    "hidden_tabs": OptionInfo([], "Hidden UI tabs",
                              component_args=lambda: _tab_choices("hidden_tabs", hideable=True)).needs_restart(),
}))

options_templates.update(options_section(("ui", "Live previews"), {
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period (steps); -1 disables",
                                              component_args={"minimum": -1, "maximum": 32, "step": 1}),
    "show_progress_type": OptionInfo("Approx cheap", "Live preview method",
                                     component_args={"choices": ["Full", "Approx cheap"]}),
    "live_preview_refresh_period": OptionInfo(1000, "Progressbar and preview update period (ms)"),
    "interrupt_after_current": OptionInfo(True, "Don't interrupt in the middle of an image (first click ends the batch)"),
}))

options_templates.update(options_section(("infotext", "Infotext"), {
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),
    "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext"),
    "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext"),
    "add_version_to_infotext": OptionInfo(True, "Add program version to infotext"),
    "infotext_skip_pasting": OptionInfo([], "Disregard fields from pasted infotext"),
    "use_old_hires_fix_width_height": OptionInfo(False, "Old hires fix width/height semantics when pasting"),
    "auto_backcompat": OptionInfo(True, "Automatic backward compatibility when pasting old infotexts"),
    "disable_weights_auto_swap": OptionInfo(True, "Ignore the checkpoint named in pasted infotext"),
}))

options_templates.update(options_section(("ui-paste", "Send to"), {
    "send_seed": OptionInfo(True, "Send seed when sending prompt or image to other interface"),
    "send_size": OptionInfo(True, "Send size when sending prompt or image to another interface"),
}))

options_templates.update(options_section(("system", "System"), {
    "disabled_extensions": OptionInfo([], "Disable these extensions"),
    "disable_all_extensions": OptionInfo("none", "Disable all extensions (preserves the list of disabled extensions)",
                                         component_args={"choices": ["none", "extra", "all"]}),
    "queue_max_size": OptionInfo(64, "Maximum number of generation jobs waiting in the queue",
                                 component_args={"minimum": 1, "maximum": 1000, "step": 1}),
    "quicksettings_list": OptionInfo(["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"], "Quicksettings list"),
}))

options_templates.update(options_section(("api", "API"), {
    "api_max_pixels": OptionInfo(16777216, "API: most pixels one txt2img/img2img request may ask for (width × height × batch size)",
                                 component_args={"minimum": 4096, "maximum": 268435456, "step": 4096}, restrict_api=True),
    "api_max_request_mb": OptionInfo(64, "API: largest request body accepted, in MiB",
                                     component_args={"minimum": 1, "maximum": 2048, "step": 1}, restrict_api=True),
}))
