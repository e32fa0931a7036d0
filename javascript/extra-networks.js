// Extra-network cards: a click adds the card's text to the tab's prompt (a second click takes it out again),
// a checkpoint card switches the checkpoint; the search box hides cards whose names and paths lack its words.
(function () {
    "use strict";

    var SEPARATOR = " ";

    function textareaOf(id) {
        return document.querySelector("#" + id + " textarea") || document.querySelector("#" + id + " input");
    }

    function setValue(el, value) {
        el.value = value;
        el.dispatchEvent(new Event("input", {bubbles: true}));
    }

    function escapeRegExp(s) {
        return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }

    function tidy(text) {
        return text.replace(/[ \t]{2,}/g, " ").replace(/^[ \t,]+/, "").replace(/[ \t]+$/, "").replace(/\s+,/g, ",");
    }

    // The pattern of what a card put into a prompt: a network tag with any weight (and its activation
    // text), or the card's text as a whole word.
    function patternFor(text) {
        var tag = /^<([^:>]+):([^:>]+):[^>]*>([\s\S]*)$/.exec(text);
        if (tag) {
            var rest = tag[3].trim();
            var extra = rest ? "(?:\\s*" + escapeRegExp(rest) + ")?" : "";
            return new RegExp("<" + escapeRegExp(tag[1]) + ":" + escapeRegExp(tag[2]) + "(?::[^>]*)?>" + extra);
        }
        return new RegExp("(^|[\\s,(])" + escapeRegExp(text) + "(?=$|[\\s,):])");
    }

    function toggleText(current, text) {
        if (!text) {
            return current;
        }
        var pattern = patternFor(text);
        if (pattern.test(current)) {
            return tidy(current.replace(pattern, function (m, lead) {
                return typeof lead === "string" && /^[\s,(]$/.test(lead) ? lead : "";
            }));
        }
        if (!current.trim()) {
            return text;
        }
        return current.replace(/[ \t]+$/, "") + SEPARATOR + text;
    }

    function switchCheckpoint(title) {
        var field = textareaOf("extra_networks_checkpoint");
        var button = document.getElementById("extra_networks_checkpoint_apply");
        if (!field || !button) {
            return;
        }
        setValue(field, title);
        // Let the field's new value reach the page's state before the click sends it.
        setTimeout(function () {
            button.click();
        }, 0);
    }

    function cardClicked(card) {
        var tab = card.dataset.tab;
        if (card.dataset.checkpoint) {
            switchCheckpoint(card.dataset.checkpoint);
            var container = card.parentElement;
            if (container) {
                container.querySelectorAll(".extra-network-card.card-selected").forEach(function (c) {
                    c.classList.remove("card-selected");
                });
            }
            card.classList.add("card-selected");
            return;
        }
        var prompt = textareaOf(tab + "_prompt");
        if (prompt && card.dataset.prompt) {
            setValue(prompt, toggleText(prompt.value, card.dataset.prompt));
        }
        var negative = textareaOf(tab + "_neg_prompt");
        if (negative && card.dataset.neg) {
            setValue(negative, toggleText(negative.value, card.dataset.neg));
        }
    }

    function cardMatches(card, words) {
        var terms = (card.dataset.search || "").toLowerCase();
        for (var i = 0; i < words.length; i++) {
            if (terms.indexOf(words[i]) === -1) {
                return false;
            }
        }
        return true;
    }

    function filterCards(searchHost, query) {
        // Search box ids are <tab>_<page>_extra_search; the cards are in <tab>_<page>_cards.
        var id = searchHost.id.replace(/_extra_search$/, "_cards");
        var container = document.getElementById(id);
        if (!container) {
            return;
        }
        var words = query.toLowerCase().split(/\s+/).filter(function (w) {
            return w.length > 0;
        });
        container.querySelectorAll(".extra-network-card").forEach(function (card) {
            card.style.display = cardMatches(card, words) ? "" : "none";
        });
    }

    document.addEventListener("click", function (e) {
        var card = e.target.closest ? e.target.closest(".extra-network-card") : null;
        if (card) {
            e.preventDefault();
            cardClicked(card);
        }
    });

    document.addEventListener("keydown", function (e) {
        if ((e.key === "Enter" || e.key === " ") && e.target.classList &&
            e.target.classList.contains("extra-network-card")) {
            e.preventDefault();
            cardClicked(e.target);
        }
    });

    document.addEventListener("input", function (e) {
        var host = e.target.closest ? e.target.closest(".extra-network-search") : null;
        if (host) {
            filterCards(host, e.target.value || "");
        }
    });

    window.easelExtraNetworks = {toggleText: toggleText, filterCards: filterCards};
})();
