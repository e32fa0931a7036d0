// Shows the page in the chosen localization: `window.localization` (English -> translation, placed in
// the page head by the server) is applied to text, placeholders, titles and aria-labels, first over the
// whole page, then only to what Gradio adds or changes later. What people typed and what results carry
// (prompts, infotext, gallery captions, model and style names) is left as it is.
(function () {
    "use strict";

    var mapping = window.localization;
    var has = Object.prototype.hasOwnProperty;
    var active = !!mapping && typeof mapping === "object" && Object.keys(mapping).length > 0;

    // A1111 name, for extensions: the translation of a UI string, or undefined.
    window.getTranslation = function (text) {
        return active && typeof text === "string" && has.call(mapping, text) ? mapping[text] : undefined;
    };
    if (!active) {
        return;
    }

    var ATTRIBUTES = ["placeholder", "title", "aria-label"];
    // Areas holding the user's text or results: neither their text nor their attributes change.
    // Extensions mark theirs with translate="no" or the "notranslate" class.
    var USER_CONTENT = [
        "[translate='no']", ".notranslate", "[contenteditable]:not([contenteditable='false'])",
        "[id$='_gallery']", "[id^='html_info_']", "[id^='html_log_']", "[id^='generation_info_']",
        "[id^='infotext_']", "#pnginfo_html_info", "#pnginfo_generation_info", "[id$='_cards_html']",
        "#extensions_installed_html", "#extensions_available_html", "#model_status", "[id$='_token_counter']"
    ];
    // Dropdowns listing names (styles, checkpoints, VAEs): their label is UI text, their choices are not.
    ["[id$='_styles']", "#setting_sd_model_checkpoint", "#setting_sd_vae"].forEach(function (id) {
        USER_CONTENT.push(id + " [role='listbox']", id + " .token");
    });
    USER_CONTENT = USER_CONTENT.join(",");
    // Elements whose text is data rather than UI text (a textarea's text is its value); their
    // attributes (a prompt box's placeholder) are still translated.
    var TEXT_IS_DATA = {SCRIPT: true, STYLE: true, TEXTAREA: true, CODE: true, PRE: true, NOSCRIPT: true};

    // What this script last wrote, so its own changes are not taken for new English text.
    var writtenText = new WeakMap();
    var writtenAttributes = new WeakMap();

    // The translation of `text` (surrounding white space kept), or null when the mapping lacks it.
    function lookup(text) {
        if (has.call(mapping, text)) {
            return mapping[text];
        }
        var trimmed = text.trim();
        if (!trimmed || trimmed === text || !has.call(mapping, trimmed)) {
            return null;
        }
        var start = text.indexOf(trimmed);
        return text.slice(0, start) + mapping[trimmed] + text.slice(start + trimmed.length);
    }

    function translateText(node) {
        var text = node.nodeValue;
        if (!text || writtenText.get(node) === text) {
            return;
        }
        var out = lookup(text);
        if (out === null) {
            return;
        }
        var parent = node.parentNode;
        // An <option> without a value attribute submits its text: keep that English.
        if (parent && parent.nodeName === "OPTION" && !parent.hasAttribute("value")) {
            parent.setAttribute("value", parent.value);
        }
        writtenText.set(node, out);
        node.nodeValue = out;
    }

    function translateAttribute(el, name) {
        var value = el.getAttribute(name);
        if (!value) {
            return;
        }
        var mine = writtenAttributes.get(el);
        if (mine && mine[name] === value) {
            return;
        }
        var out = lookup(value);
        if (out === null) {
            return;
        }
        if (!mine) {
            mine = {};
            writtenAttributes.set(el, mine);
        }
        mine[name] = out;
        el.setAttribute(name, out);
    }

    function translateAttributes(el) {
        for (var i = 0; i < ATTRIBUTES.length; i++) {
            translateAttribute(el, ATTRIBUTES[i]);
        }
    }

    function isUserContent(el) {
        return !el || (el.closest && el.closest(USER_CONTENT) !== null);
    }

    function textAllowed(node) {
        var parent = node.parentElement;
        return !!parent && !TEXT_IS_DATA[parent.nodeName] && !isUserContent(parent);
    }

    function acceptNode(node) {
        if (node.nodeType === Node.TEXT_NODE) {
            return TEXT_IS_DATA[node.parentNode.nodeName] ? NodeFilter.FILTER_SKIP : NodeFilter.FILTER_ACCEPT;
        }
        // Rejecting an element skips its whole subtree.
        return node.matches(USER_CONTENT) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT;
    }

    // Translate `root` and everything under it, unless it lies in user content.
    function translateTree(root) {
        if (root.nodeType === Node.TEXT_NODE) {
            if (textAllowed(root)) {
                translateText(root);
            }
            return;
        }
        if (root.nodeType !== Node.ELEMENT_NODE || isUserContent(root)) {
            return;
        }
        translateAttributes(root);
        var walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, acceptNode);
        for (var node = walker.nextNode(); node; node = walker.nextNode()) {
            if (node.nodeType === Node.TEXT_NODE) {
                translateText(node);
            } else {
                translateAttributes(node);
            }
        }
    }

    function onMutations(records) {
        for (var i = 0; i < records.length; i++) {
            var record = records[i];
            if (record.type === "childList") {
                for (var j = 0; j < record.addedNodes.length; j++) {
                    translateTree(record.addedNodes[j]);
                }
            } else if (record.type === "characterData") {
                if (textAllowed(record.target)) {
                    translateText(record.target);
                }
            } else if (record.type === "attributes" && !isUserContent(record.target)) {
                translateAttribute(record.target, record.attributeName);
            }
        }
    }

    new MutationObserver(onMutations).observe(document.documentElement, {
        childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ATTRIBUTES
    });
    if (document.body) {
        translateTree(document.body);
    }
})();
