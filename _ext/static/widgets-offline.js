/* Offline ipywidgets on the book's pages: loaded after RequireJS and before the HTML manager (nb_ipywidgets_js).
 *
 * 1. The HTML manager's bundles find their fonts (Font Awesome, for the widgets' icons) next to the URL of the AMD
 *    module they define, "@jupyter-widgets/controls" and the like: relative to the page, where nothing is. Map those
 *    modules into the vendored copy, _static/offline/html-manager/ (beside this file), where the fonts are. The
 *    modules themselves are defined by embed-amd.js; nothing is fetched from these paths but the fonts.
 * 2. ipywidgets 8 typesets widget labels with MathJax 2's API (MathJax.Hub.Queue); the book loads MathJax 3,
 *    where that is an uncaught TypeError for every widget. Give MathJax 3 that one entry point.
 */
(function () {
  "use strict";
  var here = document.currentScript && document.currentScript.src;
  if (here && window.require && window.require.config) {
    var base = here.slice(0, here.lastIndexOf("/") + 1);
    var dist = base + "offline/html-manager";
    window.require.config({
      paths: {
        "@jupyter-widgets": dist, // base, controls, html-manager, ... -> offline/html-manager/NAME
        "@jupyter-widgets/html-manager/dist": dist, // the longer prefix wins: .../dist/libembed-amd
      },
    });
  }

  function typesetLater(element) {
    var mj = window.MathJax;
    var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
    ready.then(function () { return mj.typesetPromise ? mj.typesetPromise([element]) : null; })
      .catch(function (err) { console.warn("MathJax could not typeset a widget label:", err); });
  }

  function installHub() {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.version || String(mj.version).charAt(0) !== "3") return;
    mj.Hub = {
      Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) typesetLater(job[2]);
        }
      },
    };
  }

  // MathJax is a deferred script: it has run by DOMContentLoaded; the HTML manager renders at "load".
  document.addEventListener("DOMContentLoaded", installHub);
  window.addEventListener("load", installHub);
})();
