// The Extensions tab: read the Installed table's checkboxes for Apply / Check for updates, send an
// Available entry's Install click to the server, and after "Apply and restart UI" wait for the
// restarted server before reloading the page.
(function () {
    "use strict";

    function namesOf(selector, wantChecked) {
        var names = [];
        document.querySelectorAll("#extensions_installed_html " + selector).forEach(function (box) {
            if (box.checked === wantChecked && box.dataset.extension) {
                names.push(box.dataset.extension);
            }
        });
        return names;
    }

    // A1111's names: the click handlers' js functions; they return the hidden fields' new values.
    window.extensions_apply = function (_disabled, _update, disableAll) {
        return [JSON.stringify(namesOf("input.extension-enable", false)),
            JSON.stringify(namesOf("input.extension-update", true)), disableAll];
    };

    window.extensions_check = function () {
        document.querySelectorAll("#extensions_installed_html .extension-update-cell").forEach(function (cell) {
            cell.textContent = "checking...";
        });
        return [JSON.stringify(namesOf("input.extension-enable", false))];
    };

    function setValue(el, value) {
        el.value = value;
        el.dispatchEvent(new Event("input", {bubbles: true}));
    }

    window.install_extension_from_index = function (button, url) {
        var field = document.querySelector("#extension_to_install textarea, #extension_to_install input");
        var trigger = document.getElementById("install_extension_button");
        if (!field || !trigger) {
            return;
        }
        button.disabled = true;
        button.textContent = "Installing...";
        setValue(field, url);
        // Let the field's new value reach the page's state before the click sends it.
        setTimeout(function () {
            trigger.click();
        }, 0);
    };

    document.addEventListener("click", function (e) {
        var button = e.target.closest ? e.target.closest("#extensions_available_html button.extension-install") : null;
        if (button && button.dataset.url && !button.disabled) {
            e.preventDefault();
            window.install_extension_from_index(button, button.dataset.url);
        }
    });

    function showRestarting(text) {
        var box = document.getElementById("easel_restart_overlay");
        if (!box) {
            box = document.createElement("div");
            box.id = "easel_restart_overlay";
            box.setAttribute("role", "status");
            document.body.appendChild(box);
        }
        box.textContent = text;
    }

    // The server goes away and comes back (the new process first answers with a "starting" page, 503):
    // reload once the page itself answers 200 after the old server was seen gone.
    window.easelAwaitRestart = function (info) {
        if (typeof info !== "string" || info.indexOf("data-easel-restart") < 0) {
            return [];
        }
        showRestarting("Restarting Easel... the page reloads when it is back.");
        var started = Date.now();
        var sawDown = false;
        function poll() {
            fetch(window.location.href, {cache: "no-store"}).then(function (r) {
                if (!r.ok) {
                    sawDown = true;
                } else if (sawDown || Date.now() - started > 60000) {
                    window.location.reload();
                    return;
                }
                schedule();
            }, function () {
                sawDown = true;
                schedule();
            });
        }
        function schedule() {
            if (Date.now() - started > 300000) {
                showRestarting("Easel did not come back within 5 minutes; see its console, then reload this page.");
                return;
            }
            setTimeout(poll, 500);
        }
        setTimeout(poll, 500);
        return [];
    };
})();
