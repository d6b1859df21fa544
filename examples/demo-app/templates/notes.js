// Progressive enhancement for the notes form: save through the JSON API, sending the
// page's CSRF token in the X-XSRFToken header (as Tornado's JavaScript clients do).
// The list it redraws looks like the server's: each note with its delete form.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("note-form");
  const list = document.getElementById("notes");
  const clear = document.getElementById("notes-clear");
  const meta = document.querySelector('meta[name="xsrf-token"]');
  if (!form || !list || !meta || !window.fetch) return;

  const noteItem = (text, index) => {
    const li = document.createElement("li");
    const span = document.createElement("span");
    span.className = "note-text";
    span.textContent = text;
    const del = document.createElement("form");
    del.className = "inline note-delete";
    del.method = "post";
    del.action = "/notes/delete";
    for (const [name, value] of [["_xsrf", meta.content], ["index", String(index)]]) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      del.appendChild(input);
    }
    const button = document.createElement("button");
    button.className = "danger";
    button.type = "submit";
    button.title = "Delete this note";
    button.textContent = "Delete";
    del.appendChild(button);
    li.append(span, del);
    return li;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = form.elements.text.value;
    const res = await fetch("/api/notes", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-XSRFToken": meta.content },
      body: JSON.stringify({ text }),
      credentials: "same-origin",
    });
    if (!res.ok) { form.submit(); return; } // let the server explain
    const body = await res.json();
    // Replaces every item, the "No notes yet" one included.
    list.replaceChildren(...body.notes.map(noteItem));
    if (clear) clear.hidden = body.notes.length === 0;
    form.elements.text.value = "";
  });
});
