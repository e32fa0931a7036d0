// Uses the page-script API the way A1111 extensions do and records what it saw, for the browser tests.
window.extPageApi = {loaded: 0, updates: 0, afterUpdates: 0, available: 0, tabs: [], greetings: []};

onUiLoaded(function () {
    throw new Error("ext_ui_tab: this onUiLoaded callback fails on purpose");
});

onUiLoaded(function () {
    var seen = window.extPageApi;
    seen.loaded += 1;
    seen.promptAtLoad = gradioApp().querySelector("#txt2img_prompt textarea") !== null;
    seen.byIdAtLoad = gradioApp().getElementById("txt2img_generate") !== null;
    seen.greetingAtLoad = opts.ext_ui_tab_greeting;
    seen.tabAtLoad = get_uiCurrentTab().textContent.trim();
    seen.contentAtLoad = get_uiCurrentTabContent().id;
    seen.generateVisible = uiElementIsVisible(document.getElementById("txt2img_generate"));
});

onUiUpdate(function (mutations) {
    window.extPageApi.updates += 1;
    window.extPageApi.mutationsGiven = Array.isArray(mutations) && mutations.length > 0;
});

onAfterUiUpdate(function () {
    window.extPageApi.afterUpdates += 1;
});

onUiTabChange(function () {
    window.extPageApi.tabs.push(get_uiCurrentTabContent().id);
});

onOptionsAvailable(function () {
    window.extPageApi.available += 1;
});

onOptionsChanged(function () {
    window.extPageApi.greetings.push(opts.ext_ui_tab_greeting);
});
