// Progressive enhancement for the notes form: save through the JSON API, sending the
// page's CSRF token in the X-XSRFToken header (as Tornado's JavaScript clients do).
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("note-form");
  const meta = document.querySelector('meta[name="xsrf-token"]');
  if (!form || !meta || !window.fetch) return;
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
    let list = document.getElementById("notes");
    if (!list) {
      list = document.createElement("ul");
      list.id = "notes";
      list.className = "notes";
      form.parentNode.insertBefore(list, form);
    }
    list.replaceChildren(...body.notes.map((n) => {
      const li = document.createElement("li");
      li.textContent = n;
      return li;
    }));
    form.elements.text.value = "";
  });
});
