// Setup wizard behaviour (no inline scripts: CSP). After each step swaps in, move focus to the first field in error,
// else to the step's heading, so keyboard and screen-reader users land on the new content.
(function () {
  "use strict";

  function focusStep(root) {
    var target = root.querySelector("[aria-invalid=true]") || root.querySelector(".wizard-title");
    if (!target) return;
    if (target.tagName === "FIELDSET") target = target.querySelector("input:checked, input") || target;
    target.focus({ preventScroll: true });
    var top = root.getBoundingClientRect().top + window.scrollY - 80;
    if (window.scrollY > top) window.scrollTo({ top: Math.max(top, 0) });
  }

  // Typing an id selects "Other Hugging Face model", so a typed id is never ignored.
  document.addEventListener("input", function (event) {
    if (event.target.id !== "custom_model_id") return;
    var other = document.querySelector("input[name=model][value=custom]");
    if (other && event.target.value.trim()) other.checked = true;
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    var root = document.getElementById("wizard");
    if (root && event.detail.target && event.detail.target.id === "wizard") focusStep(root);
  });
})();
