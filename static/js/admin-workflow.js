// The workflow page's columns: the line over each folded phase list names the phases checked in it.
// Delegated from the document, so rows added with "Add another Board column" follow too.
(function () {
  "use strict";

  function chip(text, className) {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    return span;
  }

  function refresh(details) {
    const names = Array.from(details.querySelectorAll("input[type=checkbox]:checked"), (box) =>
      box.closest("label").textContent.trim(),
    );
    const chips = names.length ? names.map((name) => chip(name, "omoi-chip")) : [chip(details.dataset.empty, "omoi-multi-empty")];
    details.querySelector(".omoi-multi-chosen").replaceChildren(...chips);
  }

  document.addEventListener("change", (event) => {
    const details = event.target instanceof Element && event.target.closest("details.omoi-multi");
    if (details) refresh(details);
  });
})();
