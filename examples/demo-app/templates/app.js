// The single-page notes client: reads and adds notes through the JSON API (/api/me,
// /api/notes), logs in and out with fetch. Its only CSRF code is what Angular's HttpClient
// and axios do by themselves: copy the XSRF-TOKEN cookie into the X-XSRF-TOKEN header of
// every unsafe request. The server refreshes the cookie when the secret changes (login,
// logout), so reading it afresh before each request is all it takes.
"use strict";

const xsrfToken = () => {
  for (const part of document.cookie.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === "XSRF-TOKEN") {
      return decodeURIComponent(part.slice(eq + 1).trim());
    }
  }
  return null;
};

const send = (method, url, body, contentType) => {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    const token = xsrfToken();
    if (token) headers["X-XSRF-TOKEN"] = token;
  }
  if (contentType) headers["Content-Type"] = contentType;
  return fetch(url, { method, headers, body, credentials: "same-origin" });
};

// "403: token mismatch" and the like, from the JSON error bodies.
const why = async (res) => {
  let text = String(res.status);
  try {
    const body = await res.json();
    if (body.reason || body.error) text += ": " + (body.reason || body.error);
  } catch (_) { /* not JSON */ }
  return text;
};

document.addEventListener("DOMContentLoaded", () => {
  const $ = (id) => document.getElementById(id);
  const status = $("app-status");
  const error = $("app-error");
  const logout = $("app-logout");
  const login = $("app-login");
  const card = $("app-notes-card");
  const list = $("app-notes");
  const form = $("app-form");

  const showError = (text) => {
    error.textContent = text || "";
    error.hidden = !text;
  };

  const renderNotes = (notes) => {
    const items = notes.map((text) => {
      const li = document.createElement("li");
      li.className = "app-note";
      li.textContent = text;
      return li;
    });
    if (items.length === 0) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No notes yet.";
      items.push(li);
    }
    list.replaceChildren(...items);
  };

  const render = (me) => {
    login.hidden = !!me;
    card.hidden = !me;
    logout.hidden = !me;
    if (!me) {
      status.textContent = "Not logged in.";
      list.replaceChildren();
      return;
    }
    status.textContent = "Logged in as " + me.name + ".";
    renderNotes(me.notes);
  };

  // Returns whether someone is logged in.
  const load = async () => {
    const res = await send("GET", "/api/me");
    if (res.status === 401) { render(null); return false; }
    if (!res.ok) { showError("Could not load your notes (" + await why(res) + ")."); return false; }
    render(await res.json());
    return true;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = form.elements.text.value;
    const res = await send("POST", "/api/notes", JSON.stringify({ text }), "application/json");
    if (res.status !== 201) { showError("Note not saved (" + await why(res) + ")."); return; }
    showError("");
    renderNotes((await res.json()).notes);
    form.elements.text.value = "";
  });

  login.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new URLSearchParams(new FormData(login));
    const res = await send("POST", "/login", body);
    if (res.status === 403) { showError("Not logged in (" + await why(res) + ")."); return; }
    login.elements.password.value = "";
    showError((await load()) ? "" : "Wrong name or password.");
  });

  logout.addEventListener("click", async () => {
    const res = await send("POST", "/logout");
    if (!res.ok) { showError("Not logged out (" + await why(res) + ")."); return; }
    showError("");
    await load();
  });

  load().catch((e) => showError(String(e)));
});
