// A1111's page globals, for extension JavaScript written for AUTOMATIC1111's WebUI.
//
// Loaded first (before any extension's javascript/*.js; see modules/ui/page_assets.py). The callbacks start in
// a1111_ready.js, loaded after the last extension script, so every extension has registered its handlers by then:
//   onUiLoaded(fn)       once, when the UI is mounted (#txt2img_prompt exists) and `opts` has been loaded
//   onUiUpdate(fn)       on every DOM mutation of the app (fn gets the MutationRecords)
//   onAfterUiUpdate(fn)  after a burst of mutations has settled (debounced)
//   onUiTabChange(fn)    when the selected top-level tab changes
//   onOptionsChanged(fn) each time `opts` is loaded from the server: at start, and when "Apply settings" or a
//                        quick setting changed a value
// Globals are declared with `var`/`function` so they are properties of `window`, as extensions expect.
/* eslint-disable no-unused-vars, no-var */

var opts = {};            // the current settings (GET /webui-page/opts)
// tooltip text by a control's label or button text; extensions add their own entries (titles["My button"] = …)
var titles = {
    "Generate": "Start generating (Ctrl+Enter in a prompt box)",
    "Interrupt": "Stop the job; images finished so far are kept",
    "Skip": "Stop the current image and go on with the next one",
    "🎲️": "Use a random seed (-1) for every generation",
    "♻️": "Reuse the seed of the last generation",
    "⇅": "Swap width and height",
    "🔄": "Refresh the list",
    "📂": "Open the output folder",
    "💾": "Save the selected image(s)",
    "🗃️": "Save the images as a zip file",
    "🖼️": "Send the selected image and its parameters to img2img",
    "🎨️": "Send the selected image and its parameters to inpaint",
    "📐": "Send the selected image to the Extras tab",
    "↙️": "Read generation parameters from the prompt, or from the last generation when the prompt is empty",
    "🗑️": "Clear the prompt",
    "Sampling steps": "How many times the image is refined; more is slower and not always better",
    "CFG Scale": "How closely the image follows the prompt",
    "Seed": "The number that sets the starting noise: the same seed and settings give the same image",
    "Denoising strength": "How much of the input image may change: 0 keeps it, 1 replaces it",
    "Batch count": "How many batches to make, one after the other",
    "Batch size": "How many images to make at once",
    "Apply settings": "Save the settings; some take effect only after a restart",
};
var localization = {};    // no UI translations here: every text is shown as it is
var uiCurrentTab = null;  // the selected top-level tab's button
var currentTab = null;

var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiTabChangeCallbacks = [];
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];

var webuiPage = {
    scriptsReady: false,  // set by a1111_ready.js
    optionsLoaded: false,
    uiLoaded: false,
    afterUpdateTimer: null,
    afterUpdateDelay: 200,
    optionsUrl: "webui-page/opts",
};

// Gradio 3 put a textbox's <textarea>/<input> right inside its <label>; Gradio here wraps it in one more <div>.
// Extension code selects "#txt2img_prompt > label > textarea": through gradioApp(), such a selector also finds the
// element one level deeper.
// Likewise Gradio 3's tab buttons sat in "#tabs > .tab-nav"; here the button row (given the class tab-nav by
// webuiMarkTabNavs) is inside one more <div class="tab-wrapper">.
var GRADIO3_LABEL_CHILD = />\s*label\s*>\s*(textarea|input)/g;
var GRADIO3_TAB_NAV_CHILD = />\s*\.tab-nav\b/g;

function webuiGradio3Selector(selector) {
    if (typeof selector !== "string") return selector;
    return selector.replace(GRADIO3_LABEL_CHILD, "> label $1")
        .replace(GRADIO3_TAB_NAV_CHILD, "> .tab-wrapper > .tab-nav");
}

function webuiMarkTabNavs() {
    var lists = document.querySelectorAll('[role="tablist"]:not(.tab-nav)');
    for (var i = 0; i < lists.length; i++) lists[i].classList.add("tab-nav");
}

// A1111 loads extension scripts in the page's <head>, so their `DOMContentLoaded` (and window `load`) listeners run
// once every script has run. Here the scripts come after those events: until a1111_ready.js, a listener for an
// event that has already happened is kept and run by webuiStart, after the last extension script.
var webuiLateListeners = [];

(function() {
    var alreadyHappened = function(target, type) {
        if (target === document && type === "DOMContentLoaded") return document.readyState !== "loading";
        if (target === window && type === "load") return document.readyState === "complete";
        return false;
    };
    [document, window].forEach(function(target) {
        var original = target.addEventListener;
        target.addEventListener = function(type, listener, options) {
            if (!webuiPage.scriptsReady && listener && alreadyHappened(target, type)) {
                webuiLateListeners.push({target: target, type: type, listener: listener});
                return undefined;
            }
            return original.call(this, type, listener, options);
        };
    });
})();

function webuiRunLateListeners() {
    var late = webuiLateListeners;
    webuiLateListeners = [];
    late.forEach(function(entry) {
        try {
            var event = new Event(entry.type);
            if (typeof entry.listener === "function") entry.listener.call(entry.target, event);
            else entry.listener.handleEvent(event);
        } catch (e) {
            console.error("error running a " + entry.type + " listener:", e);
        }
    });
}

function webuiPokeObservers() {
    // extensions' own MutationObservers (set up in DOMContentLoaded, waiting for an element or `opts`) look again
    var app = gradioApp();
    if (app === document) return;
    var marker = document.createComment("webui");
    app.appendChild(marker);
    app.removeChild(marker);
}

function gradioApp() {
    var app = document.getElementsByTagName("gradio-app")[0];
    if (!app) return document;
    if (!app.webuiPatched) {
        app.webuiPatched = true;
        // A1111 code calls gradioApp().getElementById(...) on the <gradio-app> element
        app.getElementById = function(id) { return document.getElementById(id); };
        app.querySelector = function(selector) {
            return Element.prototype.querySelector.call(this, webuiGradio3Selector(selector));
        };
        app.querySelectorAll = function(selector) {
            return Element.prototype.querySelectorAll.call(this, webuiGradio3Selector(selector));
        };
    }
    return app.shadowRoot ? app.shadowRoot : app;
}

function executeCallbacks(queue, arg) {
    for (var i = 0; i < queue.length; i++) {
        try {
            queue[i](arg);
        } catch (e) {
            console.error("error running callback", queue[i], ":", e);
        }
    }
}

function onUiUpdate(callback) { uiUpdateCallbacks.push(callback); }
function onAfterUiUpdate(callback) { uiAfterUpdateCallbacks.push(callback); }
function onUiLoaded(callback) { uiLoadedCallbacks.push(callback); }
function onUiTabChange(callback) { uiTabChangeCallbacks.push(callback); }
function onOptionsChanged(callback) { optionsChangedCallbacks.push(callback); }
function onOptionsAvailable(callback) {
    if (webuiPage.optionsLoaded) { executeCallbacks([callback]); return; }
    optionsAvailableCallbacks.push(callback);
}

// --- tabs ---------------------------------------------------------------------------------------------------------

function webuiTabButtons(tabsId) {
    var tabs = gradioApp().querySelector("#" + tabsId);
    if (!tabs) return [];
    var list = tabs.querySelector('[role="tablist"]');
    return list ? Array.from(list.querySelectorAll('button[role="tab"]')) : [];
}

function get_uiCurrentTab() {
    return webuiTabButtons("tabs").find(function(b) {
        return b.classList.contains("selected") || b.getAttribute("aria-selected") === "true";
    }) || null;
}

function get_uiCurrentTabContent() {
    var button = get_uiCurrentTab();
    var id = button && button.getAttribute("aria-controls");
    if (id) {
        var panel = gradioApp().getElementById(id);
        if (panel) return panel;
    }
    return gradioApp().querySelector('#tabs > .tabitem[id^="tab_"]:not([style*="display: none"])');
}

function get_tab_index(tabId) {
    return webuiTabButtons(tabId).findIndex(function(b) {
        return b.classList.contains("selected") || b.getAttribute("aria-selected") === "true";
    });
}

function webuiSelectTab(tabsId, tabName, index) {
    var buttons = webuiTabButtons(tabsId);
    var button = buttons.find(function(b) {
        return b.getAttribute("data-tab-id") === tabName || b.id === "tab_" + tabName + "-button" ||
            b.textContent.trim() === tabName;
    }) || (index === undefined ? undefined : buttons[index]);
    if (button) button.click();
}

function args_to_array(args) { return Array.from(args); }

function switch_to_txt2img() { webuiSelectTab("tabs", "txt2img", 0); return args_to_array(arguments); }

function webuiSwitchToImg2imgMode(mode) {
    webuiSelectTab("tabs", "img2img", 1);
    if (mode === undefined) return;
    var modeIds = ["img2img_img2img_tab", "img2img_sketch_tab", "img2img_inpaint_tab", "img2img_inpaint_upload_tab"];
    var tries = 0;
    var selectMode = function() {  // the img2img tab's content is drawn only once it is shown
        if (webuiTabButtons("mode_img2img").length) webuiSelectTab("mode_img2img", modeIds[mode], mode);
        else if (tries++ < 50) setTimeout(selectMode, 20);
    };
    selectMode();
}

function switch_to_img2img_tab(no) { webuiSwitchToImg2imgMode(no); }
function switch_to_img2img() { webuiSwitchToImg2imgMode(0); return args_to_array(arguments); }
function switch_to_sketch() { webuiSwitchToImg2imgMode(1); return args_to_array(arguments); }
function switch_to_inpaint() { webuiSwitchToImg2imgMode(2); return args_to_array(arguments); }
function switch_to_inpaint_sketch() { webuiSwitchToImg2imgMode(2); return args_to_array(arguments); }
function switch_to_extras() { webuiSelectTab("tabs", "extras", 2); return args_to_array(arguments); }

// --- visibility ---------------------------------------------------------------------------------------------------

function uiElementIsVisible(el) {
    if (!el) return false;
    if (el === document) return true;
    var style = window.getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") return false;
    var parent = el.parentNode;
    if (!parent || parent === document || parent.nodeType === Node.DOCUMENT_FRAGMENT_NODE) return true;
    return uiElementIsVisible(parent);
}

function uiElementInSight(el) {
    var rect = el.getBoundingClientRect();
    var height = window.innerHeight || document.documentElement.clientHeight;
    return rect.bottom > 0 && rect.top < height && uiElementIsVisible(el);
}

// --- inputs -------------------------------------------------------------------------------------------------------

function updateInput(target) {
    // Gradio listens for "input" on the textbox/slider itself; A1111 code sets .value and then calls this
    var e = new Event("input", {bubbles: true});
    Object.defineProperty(e, "target", {value: target});
    target.dispatchEvent(e);
}

function randomId() {
    var chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    var id = "";
    for (var i = 0; i < 15; i++) id += chars.charAt(Math.floor(Math.random() * chars.length));
    return "task(" + id + ")";
}

function onEdit(editId, elem, afterMs, func) {
    // calls func once the user stopped typing in elem for afterMs; the returned function runs it now
    var timer = null;
    var run = function() {
        clearTimeout(timer);
        timer = null;
        func();
    };
    elem.addEventListener("input", function() {
        clearTimeout(timer);
        timer = setTimeout(run, afterMs);
    });
    return run;
}

function localSet(k, v) {
    try { localStorage.setItem(k, v); } catch (e) { console.warn("localStorage is not available:", e); }
}

function localGet(k, def) {
    try {
        var value = localStorage.getItem(k);
        return value === null ? def : value;
    } catch (e) {
        return def;
    }
}

function localRemove(k) {
    try { localStorage.removeItem(k); } catch (e) { console.warn("localStorage is not available:", e); }
}

function getTranslation(text) { return localization[text]; }

// --- galleries and submitting -------------------------------------------------------------------------------------

function webuiCurrentTabName() {
    var button = get_uiCurrentTab();
    return button ? (button.getAttribute("data-tab-id") || "").replace(/^tab_/, "") : "";
}

function all_gallery_buttons() {
    var name = webuiCurrentTabName();
    var gallery = gradioApp().querySelector("#" + (name || "txt2img") + "_gallery");
    if (!gallery) return [];
    return Array.from(gallery.querySelectorAll(".thumbnail-item, .thumbnail-small")).filter(uiElementIsVisible);
}

function selected_gallery_button() {
    return all_gallery_buttons().find(function(b) { return b.classList.contains("selected"); }) || null;
}

// ui.js: the gallery selection kept across a generation (A1111 restores it when new images come in); the page keeps
// Gradio's own selection, so this only records the index
var webuiRememberedGalleryIndex = {};
function rememberGallerySelection(id_gallery) {
    webuiRememberedGalleryIndex[id_gallery] = selected_gallery_index();
}
function getGallerySelectedIndex(id_gallery) { return webuiRememberedGalleryIndex[id_gallery]; }

function selected_gallery_index() {
    return all_gallery_buttons().findIndex(function(b) { return b.classList.contains("selected"); });
}

function showSubmitButtons(tabname, show) {
    var setDisplay = function(id, visible) {
        var el = gradioApp().getElementById(tabname + id);
        if (el) el.style.display = visible ? "" : "none";
    };
    setDisplay("_generate", show);
    setDisplay("_interrupt", !show);
    setDisplay("_skip", !show);
}

function create_submit_args(args) {
    // A1111's submit arguments end with the gallery's value (third from the end); it is not sent back
    var res = Array.from(args);
    if (res.length >= 3 && Array.isArray(res[res.length - 3])) res[res.length - 3] = null;
    return res;
}

function webuiSubmit(tabname, args) {
    var id = randomId();
    showSubmitButtons(tabname, false);
    localSet(tabname + "_task_id", id);
    requestProgress(id, gradioApp().getElementById(tabname + "_gallery"), null, function() {
        showSubmitButtons(tabname, true);
        localRemove(tabname + "_task_id");
    });
    var res = create_submit_args(args);
    res[0] = id;
    return res;
}

function submit() { return webuiSubmit("txt2img", arguments); }

function submit_img2img() {
    var res = webuiSubmit("img2img", arguments);
    res[1] = get_tab_index("mode_img2img");
    return res;
}

function submit_extras() { return webuiSubmit("extras", arguments); }

// --- progress -----------------------------------------------------------------------------------------------------

function formatTime(secs) {
    if (secs > 3600) return Math.floor(secs / 3600) + "h" + Math.floor((secs % 3600) / 60) + "m";
    if (secs > 60) return Math.floor(secs / 60) + "m" + Math.floor(secs % 60) + "s";
    return Math.floor(secs) + "s";
}

function request(url, data, handler, errorHandler) {
    fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data),
        credentials: "same-origin"})
        .then(function(r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(handler)
        .catch(function(e) { if (errorHandler) errorHandler(e); });
}

function requestProgress(id_task, progressbarContainer, gallery, atEnd, onProgress, inactivityTimeout) {
    // polls POST ./internal/progress until the task is done (or was never seen for inactivityTimeout seconds);
    // shows a bar in progressbarContainer and live previews above gallery
    inactivityTimeout = inactivityTimeout || 40;
    var started = Date.now();
    var wasActive = false;
    var bar = document.createElement("div");
    bar.className = "progressDiv";
    var inner = document.createElement("div");
    inner.className = "progress";
    bar.appendChild(inner);
    if (progressbarContainer && progressbarContainer.parentNode) {
        progressbarContainer.parentNode.insertBefore(bar, progressbarContainer);
    }
    var preview = null;
    var finish = function() {
        if (bar.parentNode) bar.parentNode.removeChild(bar);
        if (preview && preview.parentNode) preview.parentNode.removeChild(preview);
        if (atEnd) atEnd();
    };
    var poll = function(idLivePreview) {
        request("./internal/progress", {id_task: id_task, id_live_preview: idLivePreview, live_preview: !!gallery},
            function(res) {
                if (res.completed) { finish(); return; }
                if (res.active) wasActive = true;
                if (!res.active && !res.queued && (wasActive || Date.now() - started > inactivityTimeout * 1000)) {
                    finish();
                    return;
                }
                var percent = res.progress ? Math.round(res.progress * 100) : 0;
                inner.style.width = percent + "%";
                inner.textContent = res.textinfo || (percent ? percent + "%" : "");
                if (res.eta) inner.textContent += " ETA: " + formatTime(res.eta);
                if (res.live_preview && gallery) {
                    if (!preview) {
                        preview = document.createElement("img");
                        preview.className = "livePreview";
                        gallery.parentNode.insertBefore(preview, gallery);
                    }
                    preview.src = res.live_preview;
                }
                if (onProgress) onProgress(res);
                setTimeout(function() { poll(res.id_live_preview); }, 500);
            },
            function() { finish(); });
    };
    poll(-1);
}

// --- more of A1111's page names that extensions call ------------------------------------------------------------

// ui.js: swap the tab's width and height
function switchWidthHeight(tabname) {
    var width = gradioApp().querySelector("#" + tabname + "_width input[type=number]");
    var height = gradioApp().querySelector("#" + tabname + "_height input[type=number]");
    if (!width || !height) return [];
    var swapped = width.value;
    width.value = height.value;
    height.value = swapped;
    updateInput(width);
    updateInput(height);
    return [];
}

// aspectRatioOverlay.js draws the target size over img2img's image while width/height change; this page draws no
// overlay, so the call only records the size (extensions call it after changing the sliders)
var webuiTargetSize = {width: null, height: null};
function dimensionChange(e, is_width, is_height) {
    var value = e && e.target ? Number(e.target.value) : null;
    if (is_width) webuiTargetSize.width = value;
    if (is_height) webuiTargetSize.height = value;
}

// extraNetworks.js: load another checkpoint, as choosing it in the quick settings does
function selectCheckpoint(name) {
    window.desiredCheckpointName = name;
    var input = gradioApp().querySelector("#setting_sd_model_checkpoint input");
    if (!input) return;
    input.value = name;
    updateInput(input);
    input.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
}

// A1111's "Reload UI" after a restart: wait until the server answers again, then reload the page
function restart_reload() {
    document.body.innerHTML = '<h1 style="font-family:monospace;margin-top:20%;color:lightgray;text-align:center;">Reloading...</h1>';
    var ping = function() {
        fetch("./", {cache: "no-store"}).then(function(r) {
            if (r.ok) location.reload(); else setTimeout(ping, 500);
        }).catch(function() { setTimeout(ping, 500); });
    };
    setTimeout(ping, 2000);
    return [];
}

// contextMenus.js: extra entries of the right-click menu on an element (A1111 puts "Generate forever" there)
var webuiContextMenuEntries = [];
function appendContextMenuOption(targetElementSelector, entryName, entryFunction) {
    var id = targetElementSelector + "_" + entryName.replace(/\W/g, "_");
    webuiContextMenuEntries = webuiContextMenuEntries.filter(function(e) { return e.id !== id; });
    webuiContextMenuEntries.push({id: id, selector: targetElementSelector, name: entryName, func: entryFunction});
    return id;
}
function removeContextMenuOption(id) {
    webuiContextMenuEntries = webuiContextMenuEntries.filter(function(e) { return e.id !== id; });
}
function webuiShowContextMenu(event) {
    var entries = webuiContextMenuEntries.filter(function(e) {
        return event.target.closest && event.target.closest(e.selector);
    });
    var old = document.getElementById("context-menu");
    if (old) old.remove();
    if (!entries.length) return;
    event.preventDefault();
    var menu = document.createElement("nav");
    menu.id = "context-menu";
    menu.style.cssText = "position:fixed;z-index:1000;background:var(--background-fill-primary,#fff);" +
        "border:1px solid #888;padding:4px;left:" + event.clientX + "px;top:" + event.clientY + "px";
    entries.forEach(function(entry) {
        var item = document.createElement("div");
        item.textContent = entry.name;
        item.style.cursor = "pointer";
        item.addEventListener("click", function() { menu.remove(); entry.func(); });
        menu.appendChild(item);
    });
    document.body.appendChild(menu);
    document.addEventListener("click", function() { menu.remove(); }, {once: true});
}
document.addEventListener("contextmenu", webuiShowContextMenu);

function extraNetworksEditUserMetadata(event, tabname, extraPage, cardName) {
    // A1111's card metadata editor does not exist here; the extra-networks tab shows a LoRA's metadata itself
    console.warn("extraNetworksEditUserMetadata: no user metadata editor in this WebUI", tabname, extraPage, cardName);
}

// --- the callbacks ------------------------------------------------------------------------------------------------

function webuiFetchOptions() {
    return fetch(webuiPage.optionsUrl, {credentials: "same-origin", cache: "no-store"})
        .then(function(r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); });
}

function webuiSetOptions(values) {
    opts = values;
    var first = !webuiPage.optionsLoaded;
    webuiPage.optionsLoaded = true;
    if (first) {
        executeCallbacks(optionsAvailableCallbacks);
        optionsAvailableCallbacks = [];
    }
    executeCallbacks(optionsChangedCallbacks);
}

function webuiLoadOptions() {
    // loads `opts` at start and runs the options callbacks; returns a promise
    return webuiFetchOptions()
        .then(webuiSetOptions)
        .catch(function(e) {
            console.error("could not load the settings for `opts`:", e);
            webuiPage.optionsLoaded = true;  // the UI still loads, with empty opts
        })
        .then(webuiCheckUiLoaded);
}

function webuiWatchOptions() {
    // after "Apply settings" or a quick setting: reload `opts` until the server's values differ (then run the
    // options callbacks), for up to 15 s; nothing runs when nothing changed
    var deadline = Date.now() + 15000;
    var before = JSON.stringify(opts);
    var poll = function() {
        webuiFetchOptions().then(function(values) {
            if (JSON.stringify(values) !== before) webuiSetOptions(values);
            else if (Date.now() < deadline) setTimeout(poll, 500);
        }).catch(function(e) { console.error("could not reload the settings for `opts`:", e); });
    };
    setTimeout(poll, 300);
}

function webuiCheckUiLoaded() {
    if (webuiPage.uiLoaded || !webuiPage.scriptsReady || !webuiPage.optionsLoaded) return;
    if (!gradioApp().querySelector("#txt2img_prompt")) return;
    webuiPage.uiLoaded = true;
    executeCallbacks(uiLoadedCallbacks);
    webuiPokeObservers();
}

function webuiApplyTitles() {
    var elements = gradioApp().querySelectorAll("button, label > span, h2, .gradio-dropdown option");
    for (var i = 0; i < elements.length; i++) {
        var el = elements[i];
        if (el.title) continue;
        var text = (el.textContent || "").trim();
        var tip = titles[text] || titles[el.value];
        if (tip) el.title = tip;
    }
}

function webuiAfterUpdate() {
    webuiPage.afterUpdateTimer = null;
    executeCallbacks(uiAfterUpdateCallbacks);
    webuiApplyTitles();
}

function webuiSettingsTouched(event) {
    var target = event.target;
    if (!target || !target.closest) return;
    if ((event.type === "click" && target.closest("#settings_submit")) ||
        (event.type === "change" && target.closest("#quicksettings"))) {
        webuiWatchOptions();
    }
}

function webuiOnMutations(mutations) {
    webuiMarkTabNavs();
    webuiCheckUiLoaded();
    executeCallbacks(uiUpdateCallbacks, mutations);
    clearTimeout(webuiPage.afterUpdateTimer);
    webuiPage.afterUpdateTimer = setTimeout(webuiAfterUpdate, webuiPage.afterUpdateDelay);
    webuiCheckTabChange();
}

function webuiCheckTabChange() {
    var tab = get_uiCurrentTab();
    var panelId = tab && tab.getAttribute("aria-controls");
    // a tab's content is drawn after its button is selected: wait for it, so the callbacks can use it
    if (tab && tab !== uiCurrentTab && (!panelId || gradioApp().getElementById(panelId))) {
        uiCurrentTab = tab;
        currentTab = tab;
        executeCallbacks(uiTabChangeCallbacks);
    }
}

function webuiStart() {
    // called by a1111_ready.js, which the page loads after the last extension script
    if (webuiPage.scriptsReady) return;
    webuiPage.scriptsReady = true;
    webuiRunLateListeners();
    var root = document.body || document.documentElement;
    new MutationObserver(webuiOnMutations).observe(root, {childList: true, subtree: true});
    // going back to a tab already drawn changes only its button's state, not the document's elements
    new MutationObserver(webuiCheckTabChange).observe(root, {attributes: true, subtree: true,
        attributeFilter: ["aria-selected"]});
    document.addEventListener("click", webuiSettingsTouched, true);
    document.addEventListener("change", webuiSettingsTouched, true);
    webuiLoadOptions();
    webuiOnMutations([]);
}

// a1111_ready.js starts it; should that file not load, start anyway (late: extension scripts may still be loading)
setTimeout(webuiStart, 15000);
