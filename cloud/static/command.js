/* 快检 command view: risk alerts (ack), the offline station map, where to test next (+ plan tasks from it),
 * sampling tasks (list with progress, set one), and the assessment ranking with its printable bulletin and
 * Excel/CSV exports. Uses the login of the live dashboard through auth.js (window.kjAuth: the same session,
 * renewed the same way); when it cannot be renewed it sends the user back there to log in. Every text from the server goes in through textContent (never innerHTML). Times are shown
 * in the grid's time zone (Asia/Shanghai). */
(function () {
  "use strict";
  var API = "/api";
  var TZ = "Asia/Shanghai";
  var KIND = { positivity_rise: "阳性率上升", producer_repeat: "生产主体多次阳性", station_invalid: "无效检测率上升" };
  var SEV = { high: "高", medium: "中" };
  var STATE = { planned: "未开始", active: "进行中", done: "已完成", overdue: "已超期", cancelled: "已取消" };
  var me = null;
  var names = {};  /* analyte code → Chinese name, from GET /api/labels */
  function an(code) { return names[code] || code; }

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
  function localTime(iso) {
    if (!iso) { return "–"; }
    var d = new Date(iso);
    return d.toLocaleString("zh-CN", { timeZone: TZ, hour12: false, year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit" });
  }
  function today(offsetDays) {
    var d = new Date(Date.now() + (offsetDays || 0) * 86400000);
    return d.toLocaleDateString("sv-SE", { timeZone: TZ });
  }
  function showError(msg) { $("error").textContent = msg || ""; }

  function request(method, url, body) {
    var opts = { method: method, headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return window.kjAuth.api(url, opts).catch(function (e) {
      if (e.status === 401) { throw e; }  // onExpired sends the user to the login page
      throw new Error("操作失败 Failed (" + (e.status || "–") + ") " + (e.code || ""));
    });
  }
  function download(url, name) {
    window.kjAuth.download(url, name || null).catch(function (e) {
      showError("下载失败 Download failed (" + (e.status || "–") + ")");
    });
  }

  /* ---------------------------------------------------------------- risk feed */
  function loadRisk() {
    var q = "?limit=50";
    if ($("risk-severity").value) { q += "&severity=" + encodeURIComponent($("risk-severity").value); }
    if ($("risk-unack").checked) { q += "&unacknowledged=true"; }
    return request("GET", API + "/risk/alerts" + q).then(function (d) {
      var body = $("risk-table").querySelector("tbody");
      body.textContent = "";
      $("risk-empty").classList.toggle("hidden", d.items.length > 0);
      d.items.forEach(function (a) {
        var tr = el("tr");
        if (a.acknowledged_at) { tr.className = "acked"; }
        tr.appendChild(el("td", localTime(a.created_at)));
        var sev = el("td"); sev.appendChild(el("span", SEV[a.severity] || a.severity, "sev " + a.severity)); tr.appendChild(sev);
        tr.appendChild(el("td", KIND[a.kind] || a.kind));
        tr.appendChild(el("td", a.node_name));
        tr.appendChild(el("td", describe(a)));
        var act = el("td");
        if (!a.acknowledged_at) {
          var b = el("button", "签收 Ack");
          b.type = "button";
          b.addEventListener("click", function () {
            request("POST", API + "/risk/alerts/" + a.id + "/ack").then(loadRisk).catch(function (e) { showError(e.message); });
          });
          act.appendChild(b);
        } else {
          act.textContent = "已签收 " + (a.acknowledged_by || "");
        }
        tr.appendChild(act);
        body.appendChild(tr);
      });
    });
  }
  function describe(a) {
    if (a.kind === "positivity_rise") {
      return a.product + " · " + an(a.analyte) + "：" + a.period + " 阳性 " + a.observed + "/" + a.tests +
        "（基线约 " + pct(a.expected_rate) + "，p=" + Number(a.p_value).toExponential(1) + "）";
    }
    if (a.kind === "producer_repeat") {
      return (a.producer_name || "") + " 近期 " + a.observed + " 个批次阳性";
    }
    return (a.station || "") + " " + a.period + " 无效 " + a.observed + "/" + a.tests + "（基线约 " + pct(a.expected_rate) + "）";
  }

  /* ---------------------------------------------------------------- map (no tile server) */
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function loadMap() {
    return request("GET", API + "/risk/map").then(function (d) {
      var box = $("map");
      box.textContent = "";
      var pts = d.stations.filter(function (s) { return s.lat !== null; });
      var missing = d.stations.length - pts.length;
      $("map-note").textContent = (missing ? missing + " 个站点未导入坐标（网格导入 CSV 的 lat/lon 列）· " : "") +
        d.stations.length + " 个站点 stations";
      if (!pts.length) { return; }
      var lat0 = pts.reduce(function (s, p) { return s + p.lat; }, 0) / pts.length;
      var k = Math.cos(lat0 * Math.PI / 180);
      function xy(lat, lon) { return [lon * k, -lat]; }
      var all = pts.map(function (p) { return xy(p.lat, p.lon); });
      var xs = all.map(function (p) { return p[0]; }), ys = all.map(function (p) { return p[1]; });
      var minX = Math.min.apply(null, xs), maxX = Math.max.apply(null, xs);
      var minY = Math.min.apply(null, ys), maxY = Math.max.apply(null, ys);
      var span = Math.max(maxX - minX, maxY - minY, 0.01);
      var pad = span * 0.08;
      var W = 600, H = Math.max(240, Math.round(600 * (maxY - minY + 2 * pad) / (maxX - minX + 2 * pad)));
      H = Math.min(H, 600);
      function px(p) {
        return [(p[0] - minX + pad) / (maxX - minX + 2 * pad) * W, (p[1] - minY + pad) / (maxY - minY + 2 * pad) * H];
      }
      var root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "站点地图 station map" });
      if (d.outline.length >= 3) {
        var poly = d.outline.map(function (q) { var p = px(xy(q[0], q[1])); return p[0].toFixed(1) + "," + p[1].toFixed(1); });
        root.appendChild(svg("polygon", { points: poly.join(" "), fill: "#e8f0f8", stroke: "#9fb3c8", "stroke-width": 2 }));
      }
      pts.forEach(function (s) {
        var p = px(xy(s.lat, s.lon));
        var g = svg("g", { "class": "station", "data-station": s.station });
        if (s.risk !== "none") {
          g.appendChild(svg("circle", { cx: p[0], cy: p[1], r: 16, fill: "none",
            stroke: s.risk === "high" ? "#c62828" : "#ef6c00", "stroke-width": 4 }));
        }
        g.appendChild(svg("circle", { cx: p[0], cy: p[1], r: 10, fill: s.online ? "#2e7d32" : "#c62828" }));
        var t = svg("title", {});
        t.textContent = s.name + "（" + s.station + "）" + (s.online ? " 在线" : " 离线") +
          " · 积压 " + (s.backlog === null ? "未知" : s.backlog) + " · 预警 高" + s.alerts_high + " 中" + s.alerts_medium;
        g.appendChild(t);
        root.appendChild(g);
      });
      box.appendChild(root);
    });
  }

  /* ---------------------------------------------------------------- priorities and tasks */
  function loadPriorities() {
    return request("GET", API + "/risk/priorities?days=28&limit=10").then(function (d) {
      var body = $("prio-table").querySelector("tbody");
      body.textContent = "";
      d.items.forEach(function (p) {
        var tr = el("tr");
        [an(p.analyte), p.product, p.place_name, p.positives + "/" + p.tests, pct(p.estimate), p.alerts].forEach(function (v) {
          tr.appendChild(el("td", v));
        });
        body.appendChild(tr);
      });
    });
  }
  function loadTasks() {
    return request("GET", API + "/tasks").then(function (d) {
      var list = $("task-list");
      list.textContent = "";
      $("task-empty").classList.toggle("hidden", d.items.length > 0);
      d.items.forEach(function (t) {
        var li = el("li");
        var head = el("div");
        head.appendChild(el("strong", t.title));
        head.appendChild(document.createTextNode(" · " + t.node_name + " "));
        head.appendChild(el("span", STATE[t.state] || t.state, "state " + t.state));
        li.appendChild(head);
        var bar = el("div", null, "bar"); var fill = el("span");
        fill.style.width = Math.round(t.completion * 100) + "%";
        bar.appendChild(fill); li.appendChild(bar);
        li.appendChild(el("div", "完成 " + t.done + " / " + t.target + " · " + t.start_date + " 至 " + t.due_date +
          (t.products.length ? " · 品种 " + t.products.join("、") : "") + (t.analytes.length ? " · 项目 " + t.analytes.map(an).join("、") : ""), "muted"));
        list.appendChild(li);
      });
    });
  }
  function splitList(text) {
    return text.split(/[,，、\s]+/).map(function (s) { return s.trim(); }).filter(function (s) { return s; });
  }

  /* ---------------------------------------------------------------- ranking */
  function rankQuery(fmt) {
    return API + "/reports/rankings?level=" + encodeURIComponent($("rank-level").value) +
      "&period=" + encodeURIComponent($("rank-period").value) + (fmt ? "&format=" + fmt : "");
  }
  function loadRanking() {
    return request("GET", rankQuery("")).then(function (d) {
      var body = $("rank-table").querySelector("tbody");
      body.textContent = "";
      d.rows.forEach(function (r) {
        var tr = el("tr");
        [r.rank, r.name, r.score.toFixed(2), pct(r.coverage), pct(r.task_completion), pct(r.timeliness),
          pct(r.on_time_rate), pct(r.quality), pct(r.registration)].forEach(function (v) { tr.appendChild(el("td", v)); });
        body.appendChild(tr);
      });
      $("rank-formula").textContent = d.score_formula + " · " + d.period.label;
    });
  }

  /* ---------------------------------------------------------------- notification channels */
  var CHAN_KIND = { wecom: "企业微信", dingtalk: "钉钉", sms: "短信", webhook: "Webhook" };
  var EVENT = { report: "申报", assign: "交办", remind: "催办", feedback: "反馈", escalate: "上报", close: "办结",
    note: "备注", risk: "预警" };
  function loadChannels() {
    return request("GET", API + "/notify/channels").then(function (d) {
      var body = $("chan-table").querySelector("tbody");
      body.textContent = "";
      d.items.forEach(function (c) {
        var tr = el("tr");
        tr.appendChild(el("td", c.name));
        tr.appendChild(el("td", CHAN_KIND[c.kind] || c.kind));
        tr.appendChild(el("td", c.user_name ? "个人 " + c.user_name : c.node_code));
        tr.appendChild(el("td", c.events.map(function (e) { return EVENT[e] || e; }).join("、")));
        var act = el("td");
        var b = el("button", "删除 Delete");
        b.type = "button";
        b.addEventListener("click", function () {
          request("DELETE", API + "/notify/channels/" + c.id).then(loadChannels).catch(function (e) { showError(e.message); });
        });
        act.appendChild(b);
        tr.appendChild(act);
        body.appendChild(tr);
      });
    });
  }

  function loadAll() {
    showError("");
    Promise.all([loadRisk(), loadMap(), loadPriorities(), loadTasks(), loadRanking(), loadChannels()]).catch(function (e) {
      if (e.message !== "401") { showError(e.message); }
    });
  }

  function wire() {
    $("risk-severity").addEventListener("change", loadRisk);
    $("risk-unack").addEventListener("change", loadRisk);
    $("rank-level").addEventListener("change", loadRanking);
    $("rank-period").addEventListener("change", loadRanking);
    $("rank-html").addEventListener("click", function () { download(rankQuery("html"), null); });
    $("rank-xlsx").addEventListener("click", function () { download(rankQuery("xlsx"), "排名通报.xlsx"); });
    $("rank-csv").addEventListener("click", function () { download(rankQuery("csv"), "排名通报.csv"); });
    $("task-start").value = today(0); $("task-due").value = today(6);
    $("gen-start").value = today(1); $("gen-due").value = today(7);
    $("task-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      request("POST", API + "/tasks", {
        node: $("task-node").value.trim(), title: $("task-title").value.trim(), start: $("task-start").value,
        due: $("task-due").value, target: parseInt($("task-target").value, 10),
        products: splitList($("task-products").value), analytes: splitList($("task-analytes").value)
      }).then(function () { showError(""); $("task-title").value = ""; return loadTasks(); })
        .catch(function (e) { showError(e.message); });
    });
    $("chan-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      request("POST", API + "/notify/channels", {
        name: $("chan-name").value.trim(), kind: $("chan-kind").value, url: $("chan-url").value.trim(),
        secret: $("chan-secret").value.trim() || null, phones: splitList($("chan-phones").value),
        personal: $("chan-personal").checked
      }).then(function () { showError(""); $("chan-name").value = ""; $("chan-secret").value = ""; return loadChannels(); })
        .catch(function (e) { showError(e.message); });
    });
    $("gen-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      request("POST", API + "/tasks/generate", {
        start: $("gen-start").value, due: $("gen-due").value,
        per_place: parseInt($("gen-per").value, 10), places: parseInt($("gen-places").value, 10), days: 28
      }).then(function () { showError(""); return loadTasks(); }).catch(function (e) { showError(e.message); });
    });
  }

  function start() {
    window.kjAuth.on("onExpired", function () { window.location.href = "/dashboard/"; });
    window.kjAuth.start().then(function (ok) {
      if (ok) { begin(); } else { $("need-login").classList.remove("hidden"); }
    }, function () { $("need-login").classList.remove("hidden"); });
  }
  function begin() {
    wire();
    fetch(API + "/labels").then(function (r) { return r.ok ? r.json() : { analytes: {} }; }).then(function (l) {
      Object.keys(l.analytes || {}).forEach(function (k) { names[k] = l.analytes[k].zh; });
      if (l.timezone) { TZ = l.timezone; }
    }).catch(function () { return null; }).then(function () {
      return request("GET", API + "/me").catch(function () { return null; });
    }).then(function (u) {
      me = u;
      if (me) { $("who").textContent = (me.name || "") + (me.node_name ? " · " + me.node_name : ""); }
      var setter = !me || ["admin", "county", "town"].indexOf(me.role) >= 0;
      $("task-form").classList.toggle("hidden", !setter);
      $("gen-form").classList.toggle("hidden", !setter);
      if (me && me.role === "town") { $("rank-level").value = "village"; }
      $("main").classList.remove("hidden");
      loadAll();
      setInterval(loadAll, 60000);
    });
  }
  document.addEventListener("DOMContentLoaded", start);
})();
