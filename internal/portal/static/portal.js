// berth portal: live state of My sessions (polls /portal/api/sessions),
// thumbnails refreshed every 10 s, and confirmations. No inline script: the
// page's CSP allows only this file.
"use strict";
(function () {
  // Confirm before destructive forms (data-confirm).
  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f instanceof HTMLFormElement && f.dataset.confirm && !window.confirm(f.dataset.confirm)) {
      e.preventDefault();
    }
  });

  var list = document.getElementById("sessions");
  if (!list) return;
  var tmpl = document.getElementById("row-template");
  var live = document.getElementById("live");
  var queue = document.getElementById("queue");
  var empty = document.getElementById("empty");
  var failures = 0;

  function field(row, name) { return row.querySelector('[data-f="' + name + '"]'); }
  function show(el, on) { if (el) el.hidden = !on; }
  function setText(el, t) { if (el && el.textContent !== t) el.textContent = t; }

  function thumbURL(s) { return s.thumb + "?t=" + Math.floor(Date.now() / 10000); }

  function fill(row, s) {
    var base = "/portal/sessions/" + encodeURIComponent(s.id);
    if (!row.dataset.id) {
      row.dataset.id = s.id;
      setText(row.querySelector(".name"), s.name);
      field(row, "delete").action = base + "/delete";
      field(row, "shareform").action = base + "/share";
      setText(row.querySelector('[data-f="delete"] .sr'), " " + s.name);
      setText(row.querySelector('[data-f="connect"] .sr'), " to " + s.name + " (opens a new tab)");
      field(row, "thumb").alt = "Screenshot of " + s.name;
    }
    var label = field(row, "label");
    setText(label, s.label);
    label.className = "state " + s.class;
    setText(field(row, "reason"), s.reason || "");
    show(field(row, "reason"), !!s.reason);
    setText(field(row, "owner"), s.shared ? "Shared by " + s.owner : "");
    setText(field(row, "server"), s.server ? "on " + s.server : "");
    setText(field(row, "created"), s.created);
    var img = field(row, "thumb");
    if (s.thumb) {
      var u = thumbURL(s);
      if (img.getAttribute("src") !== u) img.src = u;
      show(img, true);
    } else {
      show(img, false);
      img.removeAttribute("src");
    }
    var c = field(row, "connect");
    if (s.connect) c.href = s.connect; else c.removeAttribute("href");
    show(c, !!s.connect);
    show(field(row, "delete"), !!s.deletable);
    show(field(row, "share"), !!s.deletable);
    var shares = field(row, "shares");
    if (shares && s.shares) {
      shares.textContent = "";
      s.shares.forEach(function (sh) {
        var li = document.createElement("li");
        li.textContent = sh.user + ": " + (sh.level === "view" ? "view only" : "full control");
        shares.appendChild(li);
      });
    }
  }

  // A thumbnail that fails (204, an error) is hidden until the next poll.
  list.addEventListener("error", function (e) {
    if (e.target instanceof HTMLImageElement) e.target.hidden = true;
  }, true);

  function render(data) {
    var seen = {};
    var before = list.firstElementChild;
    data.sessions.forEach(function (s) {
      seen[s.id] = true;
      var row = list.querySelector('li[data-id="' + CSS.escape(s.id) + '"]');
      if (!row) {
        row = tmpl.content.firstElementChild.cloneNode(true);
        row.removeAttribute("data-id");
        list.insertBefore(row, before);
      }
      fill(row, s);
      before = row.nextElementSibling;
    });
    Array.prototype.slice.call(list.children).forEach(function (row) {
      if (!seen[row.dataset.id]) row.remove();
    });
    show(empty, data.sessions.length === 0);
    if (data.queued > 0) {
      setText(queue, data.queued + (data.queued === 1 ? " request is" : " requests are") + " waiting for a free server.");
    }
    show(queue, data.queued > 0);
    // The notice after a launch says to wait for Ready: once no desktop is
    // still starting, it has been said.
    var notice = document.getElementById("notice");
    if (notice && /starting/.test(notice.textContent) &&
        !data.sessions.some(function (s) { return s.state === "CREATING"; })) {
      notice.remove();
    }
  }

  // One timer: a poll is scheduled at most once at a time.
  var timer = 0, lastPoll = Date.now();
  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }
  function poll() {
    lastPoll = Date.now();
    fetch(list.dataset.live, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) {
          setText(live, "You are signed out. Reload the page to sign in again.");
          return null;
        }
        if (!r.ok) throw new Error("status " + r.status);
        return r.json();
      })
      .then(function (data) {
        if (!data) return;
        failures = 0;
        setText(live, "");
        render(data);
        // A hidden tab polls slowly; it catches up when shown again.
        schedule(document.hidden ? 15000 : 2500);
      })
      .catch(function () {
        failures++;
        if (failures > 2) setText(live, "Cannot reach the broker; retrying…");
        schedule(Math.min(2500 * failures, 15000));
      });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && Date.now() - lastPoll > 3000) schedule(0);
  });
  schedule(2500);
})();
