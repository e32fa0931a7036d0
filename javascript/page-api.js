// The page-script API that extensions' javascript/*.js files call by name, as on A1111's page:
// gradioApp(), onUiLoaded / onUiUpdate / onAfterUiUpdate / onUiTabChange, onOptionsAvailable /
// onOptionsChanged with the global `opts`, get_uiCurrentTab(Content)(), uiElementIsVisible /
// uiElementInSight, executeCallbacks, updateInput, args_to_array, get_tab_index and the switch_to_*
// tab switchers.
// They are globals on purpose: extension scripts are plain scripts that expect them there.
// The page draws a tab's contents the first time it is shown (Gradio's way), so elements of tabs
// other than txt2img are not there at onUiLoaded; onUiUpdate callbacks see them arrive.

/* exported opts, gradioApp, onUiLoaded, onUiUpdate, onAfterUiUpdate, onUiTabChange, onOptionsAvailable,
   onOptionsChanged, executeCallbacks, get_uiCurrentTab, get_uiCurrentTabContent, uiElementIsVisible,
   uiElementInSight, updateInput, args_to_array, get_tab_index, switch_to_txt2img, switch_to_img2img_tab, switch_to_img2img,
   switch_to_inpaint, switch_to_inpaint_sketch, switch_to_sketch */

// The options as the server has them (config.json with defaults filled in); filled when the page has
// loaded and kept current as settings change. The same object throughout, so a kept reference stays current.
var opts = {};

// One callback that throws must not keep the others from running, nor break the page.
function executeCallbacks(queue, arg) {
    (queue || []).slice().forEach(function (callback) {
        try {
            callback(arg);
        } catch (e) {
            console.error("A page callback failed:", callback, e);
        }
    });
}

// The element that holds the page; extensions query it like a document.
function gradioApp() {
    var app = document.getElementsByTagName("gradio-app")[0];
    if (!app) {
        return document;
    }
    if (app.shadowRoot) {
        return app.shadowRoot;
    }
    if (!app.getElementById) {
        app.getElementById = function (id) {
            return document.getElementById(id);
        };
    }
    return app;
}

// The selected button of the top row of tabs (its text is the tab's title), or null.
function get_uiCurrentTab() {
    return document.querySelector("#tabs > .tab-wrapper [role=tablist] > button[aria-selected=true]");
}

// The shown content of the top row of tabs (its id is "tab_<name>"), or null.
function get_uiCurrentTabContent() {
    return document.querySelector("#tabs > .tabitem[id^=tab_]:not([style*='display: none'])");
}

function uiElementIsVisible(el) {
    if (!el || el === document) {
        return !!el;
    }
    if (el.getClientRects().length === 0) {
        return false;
    }
    return getComputedStyle(el).visibility !== "hidden";
}

function uiElementInSight(el) {
    if (!uiElementIsVisible(el)) {
        return false;
    }
    var rect = el.getBoundingClientRect();
    return rect.bottom > 0 && rect.right > 0 && rect.top < window.innerHeight && rect.left < window.innerWidth;
}

// A script that sets an input's value must say so: Gradio takes the value from "input" events.
function updateInput(target) {
    target.dispatchEvent(new Event("input", {bubbles: true}));
}

function args_to_array(args) {
    return Array.from(args);
}

// The index of the selected tab among those of the Tabs element `tabsId` (its own row only).
function get_tab_index(tabsId) {
    var buttons = document.querySelectorAll("#" + tabsId + " > .tab-wrapper [role=tablist] > button");
    for (var i = 0; i < buttons.length; i++) {
        if (buttons[i].getAttribute("aria-selected") === "true") {
            return i;
        }
    }
    return 0;
}

var easelPage = (function () {
    "use strict";

    var queues = {loaded: [], update: [], afterUpdate: [], tabChange: [], optionsAvailable: [], optionsChanged: []};
    var isLoaded = false; // the onUiLoaded callbacks have run
    var pageAnswered = false; // the page's load event has answered
    var lastOptionsText = null; // the options as last handed in; null until they first come
    var currentTab = null;
    var afterUpdateTimer = null;

    // A1111's img2img mode tabs by index (0 img2img, 1 Sketch, 2 Inpaint, 3 Inpaint sketch, 4 Inpaint
    // upload, 5 Batch); extensions pass those numbers. Easel has no Sketch, Inpaint sketch or Batch tab.
    var IMG2IMG_MODES = {0: "img2img_img2img_tab", 2: "img2img_inpaint_tab", 4: "img2img_inpaint_upload_tab"};
    var OPTIONS_GRACE_MS = 3000;

    function register(queue, callback) {
        if (typeof callback !== "function") {
            console.error("A page callback must be a function; got", callback);
            return false;
        }
        queues[queue].push(callback);
        return true;
    }

    function runLater(callback) {
        setTimeout(function () {
            executeCallbacks([callback]);
        }, 0);
    }

    function tabChanged() {
        var tab = get_uiCurrentTab();
        if (isLoaded && tab && tab !== currentTab) {
            currentTab = tab;
            executeCallbacks(queues.tabChange);
        }
    }

    function onMutations(mutations) {
        executeCallbacks(queues.update, mutations);
        clearTimeout(afterUpdateTimer);
        afterUpdateTimer = setTimeout(function () {
            executeCallbacks(queues.afterUpdate);
        }, 200);
    }

    function setOptions(text) {
        if (typeof text !== "string" || text === "" || text === lastOptionsText) {
            return;
        }
        var values;
        try {
            values = JSON.parse(text);
        } catch (e) {
            console.error("The page's options are not valid JSON:", e);
            return;
        }
        var first = lastOptionsText === null;
        lastOptionsText = text;
        Object.keys(opts).forEach(function (key) {
            delete opts[key];
        });
        Object.assign(opts, values);
        if (first) {
            executeCallbacks(queues.optionsAvailable);
        }
        executeCallbacks(queues.optionsChanged);
        runLoaded();
    }

    function runLoaded() {
        if (isLoaded || !pageAnswered) {
            return;
        }
        isLoaded = true;
        currentTab = get_uiCurrentTab();
        executeCallbacks(queues.loaded);
        // The mark scripts and the browser tests wait for: what is typed from now on stays.
        document.documentElement.dataset.uiLoaded = "true";
    }

    // Called once the page's load event has answered: every control holds its value by then. The
    // onUiLoaded callbacks run as soon as the options have arrived too (they come with the same
    // answer), or after a moment without them, should that answer have carried none.
    function loaded() {
        pageAnswered = true;
        if (lastOptionsText !== null) {
            runLoaded();
        } else {
            setTimeout(runLoaded, OPTIONS_GRACE_MS);
        }
    }

    function clickTab(buttonId) {
        var button = document.getElementById(buttonId);
        if (button) {
            button.click();
        }
        return !!button;
    }

    function switchToImg2imgMode(index) {
        clickTab("tab_img2img-button");
        var mode = IMG2IMG_MODES[index];
        if (mode === undefined) {
            console.warn("Easel's img2img has no mode tab " + index + "; staying on img2img");
            mode = IMG2IMG_MODES[0];
        }
        // The mode tabs are drawn once the img2img tab shows.
        setTimeout(function () {
            clickTab(mode + "-button");
        }, 0);
    }

    function start() {
        var root = gradioApp();
        new MutationObserver(onMutations).observe(root, {childList: true, subtree: true});
        // Switching tabs only flips attributes, which the observer above does not watch.
        new MutationObserver(tabChanged).observe(root, {subtree: true, attributes: true, attributeFilter: ["aria-selected"]});
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }

    return {
        loaded: loaded,
        setOptions: setOptions,
        switchToImg2imgMode: switchToImg2imgMode,
        clickTab: clickTab,
        // A callback registered after the page has loaded (a late module script) still runs, once.
        onUiLoaded: function (callback) {
            if (register("loaded", callback) && isLoaded) {
                runLater(callback);
            }
        },
        onUiUpdate: function (callback) {
            register("update", callback);
        },
        onAfterUiUpdate: function (callback) {
            register("afterUpdate", callback);
        },
        onUiTabChange: function (callback) {
            register("tabChange", callback);
        },
        onOptionsAvailable: function (callback) {
            if (register("optionsAvailable", callback) && lastOptionsText !== null) {
                runLater(callback);
            }
        },
        onOptionsChanged: function (callback) {
            register("optionsChanged", callback);
        }
    };
})();

var onUiLoaded = easelPage.onUiLoaded;
var onUiUpdate = easelPage.onUiUpdate;
var onAfterUiUpdate = easelPage.onAfterUiUpdate;
var onUiTabChange = easelPage.onUiTabChange;
var onOptionsAvailable = easelPage.onOptionsAvailable;
var onOptionsChanged = easelPage.onOptionsChanged;

// The tab switchers hand back their arguments, so they can sit in front of a Gradio event's inputs.
function switch_to_txt2img() {
    easelPage.clickTab("tab_txt2img-button");
    return Array.from(arguments);
}

function switch_to_img2img_tab(no) {
    easelPage.switchToImg2imgMode(no);
}

// A switcher to one img2img mode tab, by A1111's mode number.
function img2imgModeSwitcher(index) {
    return function () {
        easelPage.switchToImg2imgMode(index);
        return Array.from(arguments);
    };
}

var switch_to_img2img = img2imgModeSwitcher(0);
var switch_to_sketch = img2imgModeSwitcher(1);
var switch_to_inpaint = img2imgModeSwitcher(2);
var switch_to_inpaint_sketch = img2imgModeSwitcher(3);
