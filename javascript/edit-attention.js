// Ctrl+Up / Ctrl+Down in the prompt boxes raise / lower the weight of the selected text, as A1111 users know it:
// the selection becomes (text:1.1); inside (text:1.2) the weight changes by 0.1 and the brackets go away when it
// is back at 1; inside <lora:name:0.8> the network's weight changes. Without a selection the bracket group or the
// word under the cursor is taken.
(function () {
    "use strict";

    var BOX_IDS = ["txt2img_prompt", "txt2img_neg_prompt", "img2img_prompt", "img2img_neg_prompt"];
    var STEP = 0.1;
    var DELIMITERS = ".,\\/!?%^*;:{}=`~()[]<>\"' \r\n\t";
    var NUMBER = /^-?(?:\d+\.?\d*|\.\d+)$/;

    function isPromptBox(el) {
        if (!el || el.tagName !== "TEXTAREA") {
            return false;
        }
        for (var i = 0; i < BOX_IDS.length; i++) {
            var host = document.getElementById(BOX_IDS[i]);
            if (host && host.contains(el)) {
                return true;
            }
        }
        return false;
    }

    function round(w) {
        return Math.round(w * 100) / 100;
    }

    function formatWeight(w) {
        return String(round(w));
    }

    // The group around the cursor: [start, end) of its inside, or null. `open`/`close` are one character each.
    function enclosingGroup(text, pos, open, close) {
        var before = text.substring(0, pos);
        var openAt = before.lastIndexOf(open);
        if (openAt === -1 || before.lastIndexOf(close) > openAt) {
            return null;
        }
        var after = text.substring(pos);
        var closeAt = after.indexOf(close);
        if (closeAt === -1) {
            return null;
        }
        var nextOpen = after.indexOf(open);
        if (nextOpen !== -1 && nextOpen < closeAt) {
            return null;
        }
        return [openAt + 1, pos + closeAt];
    }

    function wordAt(text, pos) {
        var start = pos;
        var end = pos;
        while (start > 0 && DELIMITERS.indexOf(text[start - 1]) === -1) {
            start--;
        }
        while (end < text.length && DELIMITERS.indexOf(text[end]) === -1) {
            end++;
        }
        return start === end ? null : [start, end];
    }

    // Change the weight at the end of a <kind:name:weight> group.
    function editNetworkWeight(text, inner, delta) {
        var content = text.substring(inner[0], inner[1]);
        var colon = content.lastIndexOf(":");
        var parts = content.split(":");
        if (parts.length < 3 || !NUMBER.test(content.substring(colon + 1).trim())) {
            return null;
        }
        var weight = round(parseFloat(content.substring(colon + 1)) + delta);
        var number = formatWeight(weight);
        var newText = text.substring(0, inner[0] + colon + 1) + number + text.substring(inner[1]);
        return {text: newText, start: inner[0] + colon + 1, end: inner[0] + colon + 1 + number.length};
    }

    // The edit for a selection [start, end): returns {text, start, end} with the new selection, or null.
    function editWeight(text, start, end, delta) {
        // Trim spaces off the selection, so "  word " becomes (word:1.1) and not ( word :1.1).
        while (start < end && /\s/.test(text[start])) {
            start++;
        }
        while (end > start && /\s/.test(text[end - 1])) {
            end--;
        }
        if (start === end) {
            return null;
        }
        var selected = text.substring(start, end);
        // A selection that includes its own brackets: "(word:1.2)".
        var whole = /^\(([\s\S]*):(-?(?:\d+\.?\d*|\.\d+))\)$/.exec(selected);
        if (whole) {
            start += 1;
            end = start + whole[1].length;
            selected = whole[1];
        }
        var after = text.substring(end);
        var weighted = /^:(-?(?:\d+\.?\d*|\.\d+))\)/.exec(after);
        if (text[start - 1] === "(" && weighted) {
            var weight = round(parseFloat(weighted[1]) + delta);
            var tail = text.substring(end + weighted[0].length);
            if (weight === 1) {
                return {text: text.substring(0, start - 1) + selected + tail, start: start - 1, end: end - 1};
            }
            return {text: text.substring(0, end) + ":" + formatWeight(weight) + ")" + tail, start: start, end: end};
        }
        var fresh = formatWeight(1 + delta);
        return {
            text: text.substring(0, start) + "(" + selected + ":" + fresh + ")" + text.substring(end),
            start: start + 1,
            end: end + 1
        };
    }

    function apply(box, delta) {
        var text = box.value;
        var start = box.selectionStart;
        var end = box.selectionEnd;
        var result = null;
        if (start === end) {
            var network = enclosingGroup(text, start, "<", ">");
            if (network) {
                result = editNetworkWeight(text, network, delta);
                if (!result) {
                    return false;
                }
            } else {
                var group = enclosingGroup(text, start, "(", ")");
                if (group) {
                    var inside = text.substring(group[0], group[1]);
                    var colon = inside.lastIndexOf(":");
                    if (colon !== -1 && NUMBER.test(inside.substring(colon + 1).trim())) {
                        start = group[0];
                        end = group[0] + colon;
                    } else {
                        start = group[0];
                        end = group[1];
                    }
                } else {
                    var word = wordAt(text, start);
                    if (!word) {
                        return false;
                    }
                    start = word[0];
                    end = word[1];
                }
            }
        }
        if (!result) {
            result = editWeight(text, start, end, delta);
        }
        if (!result) {
            return false;
        }
        box.value = result.text;
        box.setSelectionRange(result.start, result.end);
        box.dispatchEvent(new Event("input", {bubbles: true}));
        return true;
    }

    document.addEventListener("keydown", function (e) {
        var up = e.key === "ArrowUp";
        var down = e.key === "ArrowDown";
        if (!(up || down) || !(e.ctrlKey || e.metaKey) || e.altKey || e.shiftKey) {
            return;
        }
        if (!isPromptBox(e.target)) {
            return;
        }
        if (apply(e.target, up ? STEP : -STEP)) {
            e.preventDefault();
        }
    });

    // For the page's tests and for extensions that want the same edit.
    window.easelEditAttention = {editWeight: editWeight, apply: apply};
})();
