// Right-click menus on page elements, and "Generate forever" / "Cancel generate forever" on the
// Generate buttons, as on A1111's page. appendContextMenuOption, removeContextMenuOption and
// addContextMenuEventListener are globals because extension scripts call them by name.

/* exported appendContextMenuOption, removeContextMenuOption, addContextMenuEventListener */

var easelContextMenu = (function () {
    "use strict";

    var entries = []; // {id, selector, name, action}
    var nextId = 0;
    var menu = null;

    function close() {
        if (menu) {
            menu.remove();
            menu = null;
        }
    }

    function open(x, y, items) {
        close();
        menu = document.createElement("nav");
        menu.id = "context-menu";
        menu.className = "context-menu";
        var list = document.createElement("ul");
        items.forEach(function (item) {
            var li = document.createElement("li");
            li.textContent = item.name;
            li.addEventListener("click", function (e) {
                e.stopPropagation();
                close();
                try {
                    item.action();
                } catch (err) {
                    console.error("A context menu entry failed:", item.name, err);
                }
            });
            list.appendChild(li);
        });
        menu.appendChild(list);
        document.body.appendChild(menu);
        // Inside the window, even when opened near its right or bottom edge.
        menu.style.left = Math.max(0, Math.min(x, window.innerWidth - menu.offsetWidth - 4)) + "px";
        menu.style.top = Math.max(0, Math.min(y, window.innerHeight - menu.offsetHeight - 4)) + "px";
    }

    document.addEventListener("contextmenu", function (e) {
        var target = e.target instanceof Element ? e.target : null;
        var items = entries.filter(function (entry) {
            return target !== null && target.closest(entry.selector) !== null;
        });
        if (items.length === 0) {
            close();
            return;
        }
        e.preventDefault();
        open(e.clientX, e.clientY, items);
    });
    // A press outside the menu closes it (a script's click() on a button, as Generate forever does, does not).
    document.addEventListener("mousedown", function (e) {
        if (menu && !menu.contains(e.target)) {
            close();
        }
    });
    document.addEventListener("keydown", function (e) {
        if (e.key === "Escape") {
            close();
        }
    });
    window.addEventListener("blur", close);

    function append(selector, name, action) {
        var id = selector + "_" + nextId++;
        entries.push({id: id, selector: selector, name: name, action: action});
        return id;
    }

    function remove(id) {
        entries = entries.filter(function (entry) {
            return entry.id !== id;
        });
    }

    // Generate forever: click Generate again whenever the tab's job has ended, until cancelled.
    var POLL_MS = 250;
    var NO_SIGN_MS = 10000; // a job that never showed itself (it failed at once): try again after this
    var forever = {};

    function shown(el) {
        return el !== null && el.offsetParent !== null;
    }

    function idle(tab) {
        return shown(document.getElementById(tab + "_generate")) && !shown(document.getElementById(tab + "_interrupt"));
    }

    function infoText(tab) {
        var info = document.getElementById("html_info_" + tab);
        return info ? info.innerText : "";
    }

    function startForever(tab) {
        if (forever[tab]) {
            return;
        }
        var run = {sawBusy: false, info: null, clickedAt: 0};
        function click() {
            run.sawBusy = false;
            run.info = infoText(tab);
            run.clickedAt = Date.now();
            document.getElementById(tab + "_generate").click();
        }
        run.timer = setInterval(function () {
            if (!idle(tab)) {
                run.sawBusy = true;
                return;
            }
            // A fast job can end between two looks; its new infotext tells that it ran.
            var ended = run.sawBusy || infoText(tab) !== run.info || Date.now() - run.clickedAt > NO_SIGN_MS;
            if (run.info === null || ended) {
                click();
            }
        }, POLL_MS);
        forever[tab] = run;
        document.documentElement.dataset[tab + "GenerateForever"] = "on";
    }

    function stopForever(tab) {
        if (forever[tab]) {
            clearInterval(forever[tab].timer);
            delete forever[tab];
        }
        delete document.documentElement.dataset[tab + "GenerateForever"];
    }

    // On Generate, and on Interrupt / Skip, which stand in its place while a job runs.
    ["txt2img", "img2img"].forEach(function (tab) {
        append("#" + tab + "_generate_box", "Generate forever", function () {
            startForever(tab);
        });
        append("#" + tab + "_generate_box", "Cancel generate forever", function () {
            stopForever(tab);
        });
    });

    return {append: append, remove: remove};
})();

function appendContextMenuOption(targetElementSelector, entryName, entryFunction) {
    return easelContextMenu.append(targetElementSelector, entryName, entryFunction);
}

function removeContextMenuOption(id) {
    easelContextMenu.remove(id);
}

// The menu listens on the whole document from the start; there is nothing more to attach.
function addContextMenuEventListener() {}
