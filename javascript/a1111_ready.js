// Loaded after the last extension script (modules/ui/page_assets.py): every extension has registered its
// onUiLoaded / onUiUpdate / … handlers, so the page's callbacks can start (javascript/a1111_page.js).
webuiStart();
