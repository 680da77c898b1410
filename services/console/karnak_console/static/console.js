// The console's few behaviours, wired by data attributes (the CSP allows no inline script).
// Every page works without them (plain forms post and are answered with a page); they add dialogs,
// copying to the clipboard, confirmations and the rules between fields that the forms state.
"use strict";

function byId(id) { return document.getElementById(id); }

// data-dialog-open="ID" opens the <dialog id="ID"> (showModal: Esc closes, focus stays inside).
// data-dialog-close closes the dialog it sits in.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-dialog-open]");
  if (opener) {
    const dialog = byId(opener.dataset.dialogOpen);
    if (dialog) { event.preventDefault(); dialog.showModal(); }
    return;
  }
  const closer = event.target.closest("[data-dialog-close]");
  if (closer) {
    const dialog = closer.closest("dialog");
    if (dialog) { event.preventDefault(); dialog.close(closer.dataset.dialogClose || ""); }
    return;
  }
  // data-copy="ID": the text of element ID to the clipboard; the button says it was copied.
  const copier = event.target.closest("[data-copy]");
  if (copier) {
    const source = byId(copier.dataset.copy);
    if (source && navigator.clipboard) {
      event.preventDefault();
      navigator.clipboard.writeText(source.textContent.trim()).then(() => {
        const status = byId(copier.dataset.copy + "-status");
        if (status) { status.textContent = "Copied to the clipboard."; }
      });
    }
  }
});

// data-confirm="Question?" on a form: asked before it is sent (htmx requests ask with hx-confirm).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const submitter = event.submitter;
  const question = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
  if (question && !window.confirm(question)) { event.preventDefault(); }
});

// data-show-when="FIELD_ID=value1|value2" shows an element only while that select has one of the values;
// data-show-if="CHECKBOX_ID" only while that checkbox is checked. Hidden controls are disabled, so they
// are not sent (as the API would receive them absent).
function applyVisibility(root) {
  root.querySelectorAll("[data-show-when], [data-show-if]").forEach((element) => {
    let visible = true;
    if (element.dataset.showWhen) {
      const [id, values] = element.dataset.showWhen.split("=");
      const control = byId(id);
      visible = !!control && values.split("|").includes(control.value);
    }
    if (visible && element.dataset.showIf) {
      const control = byId(element.dataset.showIf);
      visible = !!control && control.checked;
    }
    element.hidden = !visible;
    element.querySelectorAll("input, select, textarea").forEach((control) => {
      if (!control.closest("[hidden]")) { control.disabled = false; } else { control.disabled = true; }
    });
  });
}

// data-excludes="OTHER_ID" on a checkbox: checking it unchecks the other (tag morphing XOR de-identification).
// data-needs-project-dialog="DIALOG_ID" on a checkbox: with no project to choose, checking it opens the
// dialog; its "Continue" button (data-dialog-close="continue") unchecks the box again.
document.addEventListener("change", (event) => {
  const control = event.target;
  if (control.matches("input[type=checkbox][data-excludes]") && control.checked) {
    const other = byId(control.dataset.excludes);
    if (other && other.checked) { other.checked = false; }
  }
  if (control.matches("input[type=checkbox][data-needs-project-dialog]") && control.checked) {
    const dialog = byId(control.dataset.needsProjectDialog);
    if (dialog) {
      dialog.returnValue = "";
      dialog.addEventListener("close", () => {
        if (dialog.returnValue !== "create") { control.checked = false; applyVisibility(document); }
      }, { once: true });
      dialog.showModal();
    }
  }
  // data-transcode-for="SELECT_ID" on the "Transcode only uncompressed" checkbox follows Karnak's rule:
  // picking a syntax checks it, keeping the original syntax (or Explicit VR Little Endian) unchecks it.
  document.querySelectorAll("[data-transcode-for]").forEach((box) => {
    if (control.id === box.dataset.transcodeFor) {
      box.checked = !["keep", "1.2.840.10008.1.2.1"].includes(control.value);
    }
  });
  applyVisibility(document);
});

document.addEventListener("DOMContentLoaded", () => applyVisibility(document));
document.addEventListener("htmx:afterSettle", (event) => applyVisibility(event.target));

// data-remove-row: the button removes its table row (a KHEOPS album row of the STOW form).
document.addEventListener("click", (event) => {
  const remover = event.target.closest("[data-remove-row]");
  if (remover) { event.preventDefault(); remover.closest("tr").remove(); }
});

// The Authorization header was appended to the Headers field: close the dialog, forget its credentials.
document.addEventListener("karnak:authorization-generated", () => {
  const dialog = byId("authorization-dialog");
  if (dialog) {
    dialog.querySelector("form").reset();
    byId("authorization-result").textContent = "";
    dialog.close("generated");
    applyVisibility(document);
  }
});
