/* 快检 login session, shared by the live dashboard (app.js) and the command view (command.js): one copy.
 * A password login (POST /api/auth/login) gives a short-lived access token and a refresh token, kept in
 * localStorage ("kj.token", "kj.refresh", "kj.expires") so both pages share them; the access token is renewed
 * a minute before it runs out and on a 401 (once, and one renewal at a time however many requests got the
 * 401); a "#refresh=..." link (printed by `kuaijian demo`) or a "#token=..." link (a machine token) logs in at
 * once and is removed from the address bar. `send` / `api` / `download` add the bearer header; when the
 * session cannot be renewed they call the page's `onExpired(err)`. Errors carry the server's stable `code`
 * and the HTTP `status`, never its English message for display.
 * Does not: draw anything (the pages own their login box and error texts). */
(function () {
  "use strict";

  var API = "/api";
  var s = { token: null, refreshToken: null, expires: 0, renewTimer: null };
  var hooks = { onExpired: function () {}, onRenewed: function () {} };
  var renewing = null;

  function store(key, value) {
    try { if (value === null) { localStorage.removeItem(key); } else { localStorage.setItem(key, value); } }
    catch (e) { /* storage disabled: keep in memory only */ }
  }
  function load(key) { try { return localStorage.getItem(key); } catch (e) { return null; } }
  function authError(code) { var e = new Error(code); e.code = code; e.status = 401; return e; }
  function httpError(r, doc) {
    var e = new Error((doc && doc.code) || ("HTTP " + r.status)); e.code = doc && doc.code; e.status = r.status;
    return e;
  }

  function saveSession(doc) {
    s.token = doc.access_token;
    s.refreshToken = doc.refresh_token || null;
    // by this browser's clock (expires_in), which need not agree with the server's
    s.expires = doc.expires_in ? Date.now() + doc.expires_in * 1000 : 0;
    store("kj.token", s.token);
    store("kj.refresh", s.refreshToken);
    store("kj.expires", s.expires ? String(s.expires) : null);
    scheduleRenew();
  }
  function scheduleRenew() {
    if (s.renewTimer !== null) { clearTimeout(s.renewTimer); s.renewTimer = null; }
    if (!s.refreshToken || !s.expires) { return; }
    // renew a minute before the access token runs out (at once if it already has)
    var wait = Math.max(0, s.expires - Date.now() - 60000);
    s.renewTimer = setTimeout(function () { s.renewTimer = null; renew().catch(function () {}); }, wait);
  }
  function renew() {
    // one refresh at a time: concurrent 401s share it. Another page of this site may have renewed already
    // (the stored refresh token is newer than ours): take that one.
    var stored = load("kj.refresh");
    if (stored && stored !== s.refreshToken && load("kj.token") && Number(load("kj.expires") || 0) > Date.now()) {
      s.token = load("kj.token"); s.refreshToken = stored; s.expires = Number(load("kj.expires") || 0);
      scheduleRenew();
      hooks.onRenewed();
      return Promise.resolve({ access_token: s.token });
    }
    if (!s.refreshToken) { return Promise.reject(authError("auth.expired")); }
    if (renewing) { return renewing; }
    renewing = fetch(API + "/auth/refresh", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: s.refreshToken })
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (!r.ok) { throw authError(doc.code || "auth.expired"); }
        saveSession(doc);
        hooks.onRenewed();
        return doc;
      });
    });
    renewing.then(function () { renewing = null; }, function () { renewing = null; });
    return renewing;
  }
  function forget() {
    s.token = null; s.refreshToken = null; s.expires = 0;
    if (s.renewTimer !== null) { clearTimeout(s.renewTimer); s.renewTimer = null; }
    store("kj.token", null); store("kj.refresh", null); store("kj.expires", null);
  }
  function login(name, password) {
    return fetch(API + "/auth/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: name, password: password })
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (!r.ok) { throw httpError(r, doc); }
        saveSession(doc);
        return doc;
      });
    });
  }
  function logout() {
    var token = s.token;
    forget();
    if (token) {  // end the session on the server too (best effort: the tokens are gone here anyway)
      fetch(API + "/auth/logout", { method: "POST", headers: { Authorization: "Bearer " + token } })
        .catch(function () {});
    }
  }
  function send(url, options, retried) {
    // fetch with the bearer token; a 401 renews the session once and retries, else onExpired
    var opts = options || {};
    var headers = opts.headers || {};
    headers.Authorization = "Bearer " + s.token;
    opts.headers = headers;
    return fetch(url, opts).then(function (r) {
      if (r.status !== 401) { return r; }
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (!retried && (s.refreshToken || load("kj.refresh"))) {
          return renew().then(function () { return send(url, options, true); },
            function (err) { forget(); hooks.onExpired(err); throw err; });
        }
        var err = authError(doc.code || "auth.invalid_token");
        forget(); hooks.onExpired(err); throw err;
      });
    });
  }
  function api(url, options) {
    return send(url, options).then(function (r) {
      if (r.status === 204) { return null; }
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (!r.ok) { throw httpError(r, doc); }
        return doc;
      });
    });
  }
  function download(url, fallbackName) {
    // exports and reports need the bearer header: fetch, then hand the browser a blob to save or show.
    // Without a file name (an HTML report) the blob opens in a new tab.
    return send(url).then(function (r) {
      if (!r.ok) { throw httpError(r, {}); }
      var m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/.exec(r.headers.get("Content-Disposition") || "");
      var name = fallbackName === null ? null : (m ? decodeURIComponent(m[1]) : fallbackName);
      return r.blob().then(function (b) { return { blob: b, name: name }; });
    }).then(function (file) {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(file.blob);
      if (file.name) { a.download = file.name; } else { a.target = "_blank"; a.rel = "noopener"; }
      document.body.appendChild(a); a.click(); document.body.removeChild(a);
      setTimeout(function () { URL.revokeObjectURL(a.href); }, 60000);
      return a.href;
    });
  }
  function start() {
    // a link like /dashboard/#refresh=... or #token=... logs in at once; the fragment never reaches the
    // server, and it is removed from the address bar so it is not bookmarked or shared. Resolves to true
    // when there is a session (possibly renewed from the link), false when the user must log in.
    var refreshLink = /(?:^#|&)refresh=([^&]+)/.exec(window.location.hash);
    var tokenLink = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (refreshLink || tokenLink) {
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    if (tokenLink) {
      forget();
      saveSession({ access_token: decodeURIComponent(tokenLink[1]) });
      return Promise.resolve(true);
    }
    if (refreshLink) {
      forget();
      s.refreshToken = decodeURIComponent(refreshLink[1]);
      return renew().then(function () { return true; }, function (e) { forget(); throw e; });
    }
    s.token = load("kj.token");
    s.refreshToken = load("kj.refresh");
    s.expires = Number(load("kj.expires") || 0);
    scheduleRenew();
    return Promise.resolve(Boolean(s.token));
  }

  window.kjAuth = {
    start: start, login: login, logout: logout, forget: forget, renew: renew,
    send: send, api: api, download: download,
    token: function () { return s.token; },
    on: function (name, fn) { hooks[name] = fn; }
  };
})();
