// Marks the page so a test can see that an enabled extension's script ran.
document.documentElement.dataset.extUiTab = "loaded";
