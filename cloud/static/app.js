/* 快检 live dashboard. Plain ES2017, no build step, no external code: fetch + EventSource + inline SVG.
 * Auth: auth.js (window.kjAuth, shared with the command view): name + password login, access token renewed
 * before it runs out and on a 401, "#refresh=..." / "#token=..." one-click links. The SSE stream gets the
 * access token as ?token= because EventSource cannot set headers. Language: zh (default) / en, kept in
 * localStorage ("kj.lang"). API errors carry a stable code that is shown through I18N ("e_" + code), never the
 * server's English message. Times are shown in the grid's time zone (GET /api/labels), analytes and QC flags
 * by their names from the same call. */
(function () {
  "use strict";

  var API = "/api";
  var OVERVIEW_URL = API + "/dashboard/overview";
  var RANKING_URL = API + "/reports/rankings";
  var LIVE_URL = API + "/live";
  var FEED_MAX = 100;

  var I18N = {
    zh: {
      title: "快检 · 农产品快速检测实时监控", live_on: "实时：已连接", live_off: "实时：未连接",
      logout: "退出", login_title: "登录", username: "用户名", password: "密码", login_button: "登录",
      login_hint: "请输入上级管理员为您开通的用户名和密码。",
      login_failed: "登录失败：用户名或密码错误", session_expired: "登录已过期，请重新登录",
      e_auth_bad_credentials: "用户名或密码错误", e_auth_locked: "密码错误次数过多，账号已暂时锁定，请稍后再试",
      e_auth_expired: "登录已过期，请重新登录", e_auth_revoked: "登录已失效（已退出或账号已停用），请重新登录",
      e_auth_invalid_token: "登录无效，请重新登录", e_auth_missing: "请先登录",
      e_case_not_found: "案件不存在或不在您的辖区", e_case_closed: "案件已办结",
      e_case_above_you: "案件已上报到上级，您无权处置", e_case_reporter_cannot_close: "上报的一级不能办结本案，须由上级审核反馈后办结",
      e_case_needs_assignee: "交办须选择承办人", e_case_needs_feedback_kind: "反馈须选择反馈结果",
      e_case_needs_feedback: "须先记录反馈（复检、封存、销毁等）才能办结", e_case_top_level: "案件已在最高一级，不能再上报",
      e_case_bad_assignee: "承办人须为负责该服务站或其上级的用户", e_not_found: "未找到", e_forbidden: "无权操作",
      e_invalid: "输入有误", e_conflict: "与当前状态冲突", e_http: "服务器错误", e_network: "无法连接服务器",
      rank_formula: "得分 = 50 × 站点覆盖率 + 50 × 按时办结率（无到期案件时按时办结率记为 1）",
      qc: "质控", channel: "通道", reports_link: "周报", only_positives: "只看阳性/可疑",
      station_unknown: "状态未知", backlog_age: "最早待传", ago_s: "秒前", ago_m: "分钟前", ago_h: "小时前",
      ago_d: "天前", command_link: "指挥视图", actor_system: "系统", auto_report: "阳性或多次可疑结果，自动立案",
      auto_remind_near: "临近处置期限，自动催办", auto_remind_overdue: "已超过处置期限，自动催办",
      auto_escalate: "超期未办结，自动上报至", val_ratio: "T/C 比值", val_control_signal: "质控线信号",
      val_test_signal: "检测线信号", val_concentration_mg_kg: "浓度 (mg/kg)", val_control_offset_px: "质控线偏移 (像素)",
      val_test_offset_px: "检测线偏移 (像素)", val_inhibition_pct: "抑制率 (%)", val_delta_a_sample: "样品 ΔA",
      val_delta_a_control: "对照 ΔA",
      kpi_tests: "检测数", kpi_positives: "阳性数", kpi_rate: "阳性率", kpi_online: "站点在线",
      kpi_cases: "待办案件", kpi_overdue: "已超期", window: "统计区间",
      grid_title: "网格下钻", col_node: "区域", col_tests: "检测数", col_positives: "阳性",
      col_rate: "阳性率", col_online: "在线站点", live_title: "实时检测结果",
      map_title: "站点在线与积压", online: "在线", offline: "离线", unknown: "未知",
      backlog_hint: "数字为待上传积压条数", chart_rate_title: "各检测项目阳性率",
      chart_daily_title: "每日检测量", cases_title: "待处置案件", col_case: "案件", col_station: "站点",
      col_analyte: "检测项目", col_product: "样品", col_status: "状态", col_level: "层级",
      col_opened: "立案时间", col_deadline: "处置期限", no_cases: "暂无待处置案件",
      footer: "数据每次有新结果时自动刷新", no_data: "暂无数据", tests: "检测", positives: "阳性",
      overdue: "超期", last_seen: "最后在线", backlog: "积压",
      v_positive: "阳性", v_negative: "阴性", v_suspect: "可疑", v_invalid: "无效",
      flag_implausible_time: "检测时间存疑（按接收时间计）", flag_seq_jump: "序号跳变",
      l_all: "全部辖区", l_county: "县/区", l_town: "乡镇", l_village: "村", l_station: "站点",
      s_open: "已立案", s_reported: "已申报", s_assigned: "已交办", s_reminded: "已催办",
      s_feedback: "已反馈", s_escalated: "已上报", s_closed: "已办结", lang_button: "English",
      rank_title: "单位排名", rank_level: "排名对象", rank_period: "周期", p_day: "日", p_week: "周",
      p_month: "月", export_csv: "导出 CSV", col_rank: "名次", col_coverage: "站点覆盖",
      col_ontime: "按时办结", col_score: "得分", action: "处置", a_assign: "交办", a_remind: "催办",
      a_feedback: "反馈", a_close: "办结", a_note: "备注", a_report: "申报", a_escalate: "上报",
      assignee: "承办人", feedback: "反馈结果", note: "说明", submit: "提交",
      f_retest_negative: "复检阴性", f_retest_positive: "复检阳性", f_product_held: "产品已封存",
      f_product_destroyed: "产品已销毁", f_lab_confirmed: "实验室确证阳性", f_lab_negative: "实验室确证阴性",
      case_reason_positive: "阳性结果", case_reason_repeated_suspect: "多次可疑", action_failed: "操作失败",
      my_cases: "只看交办给我的案件", samples_title: "样品与批次（上市前检测）", st_all: "全部已登记",
      st_held: "暂停上市", st_retest: "需复检", st_released: "可上市", st_pending: "待检测",
      st_unregistered: "未登记的检测", col_code: "样品编号", col_producer: "生产主体", col_batch: "批次",
      col_time: "时间", col_certificate: "合格证", producers_title: "生产主体", search: "搜索",
      col_name: "名称", col_kind: "类型", col_village: "村", col_products: "品种", col_samples: "检测样品",
      col_held: "暂停上市批次", held_title: "暂停上市的批次", history_title: "检测记录", total: "共",
      unregistered: "未登记", revoked: "已撤销", sample: "样品", batch: "批次", retest_of: "复检自",
      signal_title: "原始信号", code: "代码", contact: "联系人", phone: "电话", plots: "地块",
      none_held: "无", import: "导入 CSV / Excel", imported: "导入完成：新建 {c} 个，更新 {u} 个",
      row: "第 {n} 行", import_failed: "导入失败", "k_企业": "企业", "k_合作社": "合作社", "k_家庭农场": "家庭农场",
      "k_种养大户": "种养大户", "k_个人": "个人",
      sure: "判定把握", sure_high: "高", sure_mid: "中", sure_low: "低", snr: "检测线信噪比",
      val_control_snr: "质控线信噪比", val_test_snr: "检测线信噪比", val_ratio_sd: "比值标准差",
      val_margin_sd: "距判定界限 (标准差倍数)",
      cs_unclosed: "未办结", cs_all: "全部", overdue_only: "只看超期", prev: "上一页", next: "下一页",
      page_range: "第 {a}–{b} 条，共 {n} 条", results_title: "检测结果", verdict: "结果",
      result_detail: "检测结果详情", measured: "检测时间", received: "上传时间", instrument: "仪器",
      operator: "检测员", method: "方法", m_gold: "胶体金", m_enzyme: "酶抑制法", values: "测定值",
      last_known: "上次", ranking_report: "排名通报", report_failed: "报表下载失败", producer: "生产者",
      inst_fault: "仪器故障", inst_event: "仪器记录已清空或更换", inst_alerts: "仪器告警"
    },
    en: {
      title: "Kuaijian · live produce rapid-testing dashboard", live_on: "Live: connected",
      live_off: "Live: disconnected", logout: "Log out", login_title: "Log in", username: "User name",
      password: "Password", login_button: "Log in",
      login_hint: "Enter the user name and password your supervisor set up for you.",
      login_failed: "Login failed: wrong user name or password",
      e_auth_bad_credentials: "Wrong user name or password",
      e_auth_locked: "Too many wrong passwords: the account is locked for a while, try again later",
      e_auth_expired: "Session expired, please log in again",
      e_auth_revoked: "Session ended (logged out or account disabled), please log in again",
      e_auth_invalid_token: "Invalid login, please log in again", e_auth_missing: "Please log in",
      e_case_not_found: "Case not found in your area", e_case_closed: "The case is closed",
      e_case_above_you: "The case has been escalated above you", e_case_reporter_cannot_close:
      "The level that reported a case cannot close it; the level above closes it after review",
      e_case_needs_assignee: "Choose an assignee", e_case_needs_feedback_kind: "Choose a feedback result",
      e_case_needs_feedback: "Record feedback (retest, held, destroyed, ...) before closing",
      e_case_top_level: "The case is already at the top level",
      e_case_bad_assignee: "The assignee must be a user of the station or a level above it",
      e_not_found: "Not found", e_forbidden: "Not allowed", e_invalid: "Invalid input",
      e_conflict: "Conflicts with the current state", e_http: "Server error", e_network: "Cannot reach the server",
      rank_formula: "score = 50 × station coverage + 50 × on-time closure rate (1 when no case was due)",
      qc: "QC", channel: "channel", reports_link: "Weekly report", only_positives: "Positives/suspects only",
      station_unknown: "state unknown", backlog_age: "oldest waiting", ago_s: "s ago", ago_m: "min ago",
      ago_h: "h ago", ago_d: "d ago", command_link: "Command view", actor_system: "system",
      auto_report: "positive or repeated suspect result: case opened automatically",
      auto_remind_near: "deadline approaching: automatic reminder", auto_remind_overdue: "deadline passed: automatic reminder",
      auto_escalate: "overdue: escalated automatically to", val_ratio: "T/C ratio", val_control_signal: "control signal",
      val_test_signal: "test signal", val_concentration_mg_kg: "concentration (mg/kg)",
      val_control_offset_px: "control offset (px)", val_test_offset_px: "test offset (px)",
      val_inhibition_pct: "inhibition (%)", val_delta_a_sample: "sample ΔA", val_delta_a_control: "control ΔA",
      session_expired: "Session expired, please log in again",
      kpi_tests: "Tests", kpi_positives: "Positives", kpi_rate: "Positive rate", kpi_online: "Stations online",
      kpi_cases: "Open cases", kpi_overdue: "Overdue", window: "Period",
      grid_title: "Grid drill-down", col_node: "Area", col_tests: "Tests", col_positives: "Positives",
      col_rate: "Positive rate", col_online: "Online stations", live_title: "Live results",
      map_title: "Station status and backlog", online: "online", offline: "offline", unknown: "unknown",
      backlog_hint: "number = results waiting to upload", chart_rate_title: "Positive rate by analyte",
      chart_daily_title: "Tests per day", cases_title: "Open cases", col_case: "Case", col_station: "Station",
      col_analyte: "Analyte", col_product: "Sample", col_status: "Status", col_level: "Level",
      col_opened: "Opened", col_deadline: "Deadline", no_cases: "No open cases",
      footer: "Figures refresh whenever a new result arrives", no_data: "No data", tests: "tests",
      positives: "positives", overdue: "overdue", last_seen: "last seen", backlog: "backlog",
      v_positive: "positive", v_negative: "negative", v_suspect: "suspect", v_invalid: "invalid",
      flag_implausible_time: "implausible measuring time (counted at receipt)", flag_seq_jump: "seq jump",
      l_all: "All areas", l_county: "County", l_town: "Town", l_village: "Village", l_station: "Station",
      s_open: "open", s_reported: "reported", s_assigned: "assigned", s_reminded: "reminded",
      s_feedback: "feedback", s_escalated: "escalated", s_closed: "closed", lang_button: "中文",
      rank_title: "Rankings", rank_level: "Rank", rank_period: "Period", p_day: "day", p_week: "week",
      p_month: "month", export_csv: "Export CSV", col_rank: "Rank", col_coverage: "Station coverage",
      col_ontime: "Closed on time", col_score: "Score", action: "Action", a_assign: "assign",
      a_remind: "remind", a_feedback: "feedback", a_close: "close", a_note: "note", a_report: "report",
      a_escalate: "escalate", assignee: "Assignee", feedback: "Feedback", note: "Note", submit: "Submit",
      f_retest_negative: "retest negative", f_retest_positive: "retest positive",
      f_product_held: "product held", f_product_destroyed: "product destroyed",
      f_lab_confirmed: "lab confirmed positive", f_lab_negative: "lab negative",
      case_reason_positive: "positive result", case_reason_repeated_suspect: "repeated suspect",
      action_failed: "Action failed",
      my_cases: "Only cases assigned to me", samples_title: "Samples and batches (pre-market tests)",
      st_all: "All registered", st_held: "held", st_retest: "retest required", st_released: "may go to market",
      st_pending: "pending", st_unregistered: "Unregistered measurements", col_code: "Sample code",
      col_producer: "Producer", col_batch: "Batch", col_time: "Time", col_certificate: "Certificate",
      producers_title: "Producers", search: "Search", col_name: "Name", col_kind: "Type",
      col_village: "Village", col_products: "Products", col_samples: "Samples", col_held: "Held batches",
      held_title: "Held batches", history_title: "Test history", total: "total", unregistered: "unregistered",
      revoked: "revoked", sample: "Sample", batch: "batch", retest_of: "retest of", signal_title: "Raw signal",
      code: "Code", contact: "Contact", phone: "Phone", plots: "Plots", none_held: "none",
      import: "Import CSV / Excel", imported: "Imported: {c} created, {u} updated", row: "row {n}",
      import_failed: "Import failed",
      "k_企业": "enterprise", "k_合作社": "cooperative", "k_家庭农场": "family farm",
      "k_种养大户": "large grower", "k_个人": "individual",
      sure: "certainty", sure_high: "high", sure_mid: "medium", sure_low: "low", snr: "test line SNR",
      val_control_snr: "control SNR", val_test_snr: "test line SNR", val_ratio_sd: "ratio sd",
      val_margin_sd: "distance to decision limit (sds)",
      cs_unclosed: "Not closed", cs_all: "All", overdue_only: "Overdue only", prev: "Previous", next: "Next",
      page_range: "{a}–{b} of {n}", results_title: "Results", verdict: "Verdict",
      result_detail: "Result detail", measured: "Measured", received: "Received", instrument: "Instrument",
      operator: "Operator", method: "Method", m_gold: "colloidal gold", m_enzyme: "enzyme inhibition",
      values: "Values", last_known: "last", ranking_report: "Ranking bulletin", report_failed: "Report download failed",
      producer: "Producer", inst_fault: "instrument fault", inst_event: "memory cleared or analyzer replaced",
      inst_alerts: "Instrument alerts"
    }
  };

  window.kuaijianI18n = I18N;  // read by the tests' untranslated-text check

  var auth = window.kjAuth;
  var state = {
    lang: "zh", cursor: null, labels: null,
    tz: "Asia/Shanghai", node: null, data: null, source: null, refreshTimer: null, fresh: false,
    ranking: null, rankLevelChosen: false, caseId: null, caseDoc: null,
    samples: null, producers: null, producerDoc: null, casesDoc: null, resultsDoc: null, resultDoc: null
  };
  var PAGE = 20;
  var paging = { cases: 0, results: 0 };
  var PINNED_MAX = 8;

  function $(id) { return document.getElementById(id); }
  function t(key) { var d = I18N[state.lang]; return (d && d[key]) || I18N.zh[key] || key; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function store(key, value) {
    try { if (value === null) { localStorage.removeItem(key); } else { localStorage.setItem(key, value); } }
    catch (e) { /* storage disabled: keep in memory only */ }
  }
  function load(key) { try { return localStorage.getItem(key); } catch (e) { return null; } }
  function signedIn() { return Boolean(auth.token()); }
  function pct(rate) { return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + "%"; }
  var timeFormat = null;
  function fmtTime(iso) {
    // month-day hour:minute:second in the grid's time zone (not the browser's)
    if (!iso) { return "–"; }
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return String(iso); }
    if (timeFormat === null || timeFormat.zone !== state.tz) {
      var f;
      try {
        f = new Intl.DateTimeFormat("en-GB", { timeZone: state.tz, month: "numeric", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
      } catch (e) { f = new Intl.DateTimeFormat("en-GB", { month: "numeric", day: "2-digit", hour: "2-digit",
        minute: "2-digit", second: "2-digit", hourCycle: "h23" }); }
      timeFormat = { zone: state.tz, f: f };
    }
    var parts = {};
    timeFormat.f.formatToParts(d).forEach(function (x) { parts[x.type] = x.value; });
    return parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + ":" + parts.second;
  }
  function ago(seconds) {
    if (seconds === null || seconds === undefined) { return "–"; }
    if (seconds < 90) { return Math.round(seconds) + " " + t("ago_s"); }
    if (seconds < 5400) { return Math.round(seconds / 60) + " " + t("ago_m"); }
    if (seconds < 172800) { return Math.round(seconds / 3600) + " " + t("ago_h"); }
    return Math.round(seconds / 86400) + " " + t("ago_d");
  }
  function named(table, code) {
    var n = state.labels && state.labels[table] && state.labels[table][code];
    return n ? (state.lang === "zh" ? n.zh : n.en) : String(code);
  }
  function analyteName(code) { return code ? named("analytes", code) : "–"; }
  function qcName(code) { return named("qc", code); }
  function errorText(err) {
    // an Error from api()/send(): translate its code; never show the server's English message
    var code = err && err.code ? String(err.code).replace(/[.]/g, "_") : null;
    if (code && I18N.zh["e_" + code]) { return t("e_" + code); }
    var generic = err && err.status ? { 404: "e_not_found", 403: "e_forbidden", 409: "e_conflict",
      422: "e_invalid" }[err.status] : null;
    return t(generic || (err && err.status ? "e_http" : "e_network"));
  }
  function label(prefix, value) { var k = prefix + value; return I18N[state.lang][k] ? t(k) : String(value); }
  /* how sure a gold verdict is: the ratio's distance from the nearest decision boundary in noise sds */
  function sureLevel(margin) {
    if (margin === null || margin === undefined) { return null; }
    return margin >= 3 ? "high" : margin >= 1 ? "mid" : "low";
  }
  function sureText(margin) {
    var lvl = sureLevel(margin);
    return lvl === null ? "" : t("sure") + " " + t("sure_" + lvl);
  }

  /* ---------- language ---------- */
  function applyLang() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    var nodes = document.querySelectorAll("[data-i18n]");
    for (var i = 0; i < nodes.length; i++) { nodes[i].textContent = t(nodes[i].getAttribute("data-i18n")); }
    $("lang-toggle").textContent = t("lang_button");
    setLive(state.source !== null && state.source.readyState === 1);
    if (state.data) { render(state.data); }
    if (state.ranking) { renderRanking(state.ranking); }
    if (state.caseDoc) { renderCase(state.caseDoc); }
    if (state.samples) { renderSamples(state.samples); }
    if (state.producers) { renderProducers(state.producers); }
    if (state.producerDoc) { renderProducer(state.producerDoc); }
    if (state.casesDoc) { renderCases(state.casesDoc.items); pager("cases", state.casesDoc); }
    if (state.resultsDoc) { renderResults(state.resultsDoc); }
    if (state.resultDoc) { renderResult(state.resultDoc); }
    var pinned = $("feed-pinned").children;
    for (var k = 0; k < pinned.length; k++) { relabelFeedItem(pinned[k]); }
    var items = $("feed").children;
    for (var j = 0; j < items.length; j++) { relabelFeedItem(items[j]); }
  }
  function toggleLang() {
    state.lang = state.lang === "zh" ? "en" : "zh";
    store("kj.lang", state.lang);
    applyLang();
  }

  /* ---------- auth ---------- */
  function showLogin(message) {
    closeLive();
    $("main").classList.add("hidden");
    $("logout").classList.add("hidden");
    $("reports-weekly").classList.add("hidden");
    $("login").classList.remove("hidden");
    $("login-error").textContent = message || "";
    $("who").textContent = "";
  }
  function loggedIn() {
    $("login").classList.add("hidden");
    $("main").classList.remove("hidden");
    $("logout").classList.remove("hidden");
    $("reports-weekly").classList.remove("hidden");
    loadLabels().then(refresh, refresh);
  }
  function logout() {
    state.data = null;
    auth.logout();
    showLogin("");
  }
  function expired(err) { state.data = null; showLogin(errorText(err)); }
  function submitLogin(ev) {
    ev.preventDefault();
    var name = $("login-user").value.trim(), password = $("login-password").value;
    if (!name || !password) { $("login-error").textContent = t("login_failed"); return; }
    $("login-error").textContent = "";
    auth.login(name, password).then(function () {
      $("login-password").value = "";
      loggedIn();
    }).catch(function (e) { $("login-error").textContent = errorText(e); });
  }
  function loadLabels() {
    if (state.labels) { return Promise.resolve(state.labels); }
    return fetch(API + "/labels").then(function (r) { return r.json(); }).then(function (doc) {
      state.labels = doc; state.tz = doc.timezone || state.tz; return doc;
    });
  }

  /* ---------- data ---------- */
  var send = auth.send;
  var api = auth.api;
  function refresh() {
    if (!signedIn()) { return; }
    var url = OVERVIEW_URL + (state.node ? "?node=" + encodeURIComponent(state.node) : "");
    api(url).then(function (doc) {
      var first = state.data === null || (state.data.node && state.data.node.id !== doc.node.id);
      state.data = doc;
      state.node = doc.node.id;
      $("who").textContent = doc.user ? doc.user : "";
      render(doc);
      loadRanking();
      loadSamples();
      loadProducers();
      loadCases();
      loadResults();
      if (first || state.source === null) { renderFeed(doc.recent || []); openLive(doc.cursor); }
    }).catch(function (e) { if (window.console) { console.warn("overview failed", e); } });
  }
  function scheduleRefresh() {
    if (state.refreshTimer !== null) { return; }
    state.refreshTimer = setTimeout(function () { state.refreshTimer = null; refresh(); }, 1500);
  }
  function drill(nodeId) {
    state.node = nodeId; state.data = null; state.rankLevelChosen = false; closeLive(); refresh();
  }

  /* ---------- live feed (SSE) ---------- */
  function setLive(on) {
    var s = $("live-state");
    s.className = "pill " + (on ? "on" : "off");
    s.textContent = t(on ? "live_on" : "live_off");
  }
  function closeLive() { if (state.source) { state.source.close(); state.source = null; } setLive(false); }
  function openLive(cursor) {
    closeLive();
    var q = "?token=" + encodeURIComponent(auth.token());
    if (state.node) { q += "&node=" + encodeURIComponent(state.node); }
    if (cursor === undefined || cursor === null) { cursor = state.cursor; }  // a reopen resumes where it was
    if (cursor !== undefined && cursor !== null) { q += "&after=" + encodeURIComponent(cursor); state.cursor = cursor; }
    var src = new EventSource(LIVE_URL + q);
    state.source = src;
    src.onopen = function () { setLive(true); };
    src.onerror = function () { setLive(false); };
    src.addEventListener("auth", function () {
      // the server ended the stream: the token expired or was revoked; renew (or log in again)
      closeLive();
      auth.renew().then(function () { openLive(null); }, function (e) { auth.forget(); expired(e); });
    });
    src.addEventListener("result", function (ev) {
      var r;
      try { r = JSON.parse(ev.data); } catch (e) { return; }
      if (ev.lastEventId) { state.cursor = Number(ev.lastEventId); }
      addFeedItem(r, true);
      scheduleRefresh();
    });
  }
  function feedItem(r, fresh) {
    var li = el("li", "result" + (fresh ? " fresh" : ""));
    li.setAttribute("data-result-id", r.id);
    li.setAttribute("data-verdict", r.verdict);
    li.appendChild(el("span", "time", fmtTime(r.measured_at)));
    var what = el("span", "what");
    what.appendChild(el("strong", null, r.station_name || r.station));
    what.appendChild(document.createTextNode(" · " + (r.product || "") + " · " + analyteName(r.analyte)));
    li.appendChild(what);
    li.appendChild(el("span", "verdict " + r.verdict, label("v_", r.verdict)));
    (r.flags || []).forEach(function (f) {
      var badge = el("span", "flag flag-" + f, label("flag_", f));
      badge.setAttribute("data-flag", f);
      li.appendChild(badge);
    });
    var lvl = r.verdict === "invalid" ? null : sureLevel(r.margin_sd);
    if (lvl !== null) {
      var sure = el("span", "sure sure-" + lvl, sureText(r.margin_sd));
      sure.setAttribute("data-margin", String(r.margin_sd));
      sure.title = t("snr") + " " + (r.test_snr === null || r.test_snr === undefined ? "–" : r.test_snr.toFixed(1));
      li.appendChild(sure);
    }
    var qc = (r.qc || []).filter(function (q) { return q !== "control_channel"; });
    if (qc.length) {
      var flags = el("span", "qc", qc.map(qcName).join("、"));
      flags.setAttribute("data-qc", qc.join(" "));
      li.appendChild(flags);
    }
    return li;
  }
  function relabelFeedItem(li) {
    var v = li.getAttribute("data-verdict");
    var badge = li.querySelector(".verdict");
    if (badge && v) { badge.textContent = label("v_", v); }
    var sure = li.querySelector(".sure");
    if (sure) { sure.textContent = sureText(Number(sure.getAttribute("data-margin"))); }
    var flags = li.querySelector(".qc");
    if (flags) { flags.textContent = flags.getAttribute("data-qc").split(" ").map(qcName).join("、"); }
  }
  function addFeedItem(r, fresh) {
    var feed = $("feed");
    var sel = '[data-result-id="' + String(r.id).replace(/"/g, "") + '"]';
    if (feed.querySelector(sel)) { return; }
    feed.insertBefore(feedItem(r, fresh), feed.firstChild);
    while (feed.children.length > FEED_MAX) { feed.removeChild(feed.lastChild); }
    // positives and suspects are pinned above the stream: a burst of negatives (12 enzyme channels at a
    // time) cannot push them out of view
    if (r.verdict === "positive" || r.verdict === "suspect") {
      var pinned = $("feed-pinned");
      if (!pinned.querySelector(sel)) {
        pinned.insertBefore(feedItem(r, fresh), pinned.firstChild);
        while (pinned.children.length > PINNED_MAX) { pinned.removeChild(pinned.lastChild); }
      }
    }
  }
  function renderFeed(items) {
    clear($("feed"));
    clear($("feed-pinned"));
    for (var i = items.length - 1; i >= 0; i--) { addFeedItem(items[i], false); }
  }

  /* ---------- rankings ---------- */
  var CHILD_LEVEL = { all: "county", county: "town", town: "village" };
  function rankingQuery(format) {
    var q = "?level=" + encodeURIComponent($("rank-level").value) +
      "&period=" + encodeURIComponent($("rank-period").value);
    if (state.node) { q += "&node=" + encodeURIComponent(state.node); }
    return RANKING_URL + q + (format ? "&format=" + format : "");
  }
  function loadRanking() {
    if (!signedIn() || !state.data) { return; }
    var level = CHILD_LEVEL[state.data.node.level];
    $("ranking-card").classList.toggle("hidden", !level);
    if (!level) { return; }
    if (!state.rankLevelChosen) { $("rank-level").value = level; }
    api(rankingQuery(null)).then(function (doc) {
      state.ranking = doc;
      renderRanking(doc);
    }).catch(function (e) { if (window.console) { console.warn("ranking failed", e); } });
  }
  function renderRanking(doc) {
    var tbody = $("ranking-table").querySelector("tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    $("rank-period-label").textContent = doc.period.label;
    $("rank-formula").textContent = t("rank_formula");
    if (!doc.rows.length) {
      var tr0 = el("tr"); var td0 = el("td", "muted", t("no_data")); td0.colSpan = 7;
      tr0.appendChild(td0); tbody.appendChild(tr0); return;
    }
    doc.rows.forEach(function (r) {
      var tr = el("tr");
      tr.setAttribute("data-node", r.code);
      tr.appendChild(el("td", "num", r.rank));
      tr.appendChild(el("td", null, r.name));
      tr.appendChild(el("td", "num", r.tests));
      tr.appendChild(el("td", "num", pct(r.positive_rate)));
      tr.appendChild(el("td", "num", pct(r.coverage)));
      tr.appendChild(el("td", "num", pct(r.on_time_rate)));
      tr.appendChild(el("td", "num", r.score.toFixed(1)));
      tbody.appendChild(tr);
    });
  }
  function downloadRankingCsv() {
    auth.download(rankingQuery("csv"), "ranking.csv")
      .catch(function (e) { if (window.console) { console.warn("csv export failed", e); } });
  }

  /* ---------- rendering ---------- */
  function render(d) {
    renderCrumbs(d.path || [d.node]);
    var tt = d.totals;
    $("kpi-tests").textContent = tt.tests;
    $("kpi-positives").textContent = tt.positives;
    $("kpi-rate").textContent = pct(tt.positive_rate);
    $("kpi-online").textContent = tt.stations_online + " / " + tt.stations_total;
    $("kpi-cases").textContent = tt.open_cases;
    $("kpi-overdue").textContent = tt.overdue_cases;
    $("window").textContent = d.window.from.slice(0, 10) + " – " + d.window.to.slice(0, 10);
    renderGrid(d.children);
    renderStations(d.stations);
    barChart($("chart-rate"), d.by_analyte);
    dailyChart($("chart-daily"), d.per_day);
  }
  function renderCrumbs(path) {
    var nav = $("crumbs");
    while (nav.firstChild) { nav.removeChild(nav.firstChild); }
    path.forEach(function (n, i) {
      if (i > 0) { nav.appendChild(el("span", "sep", "›")); }
      var name = n.level === "all" ? t("l_all") : label("l_", n.level) + " " + n.name;
      if (i < path.length - 1) {
        var a = el("a", null, name);
        a.setAttribute("data-node", n.id);
        a.addEventListener("click", function () { drill(n.id); });
        nav.appendChild(a);
      } else { nav.appendChild(el("strong", null, name)); }
    });
  }
  function renderGrid(children) {
    var tbody = $("grid-table").querySelector("tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    if (!children.length) {
      var tr0 = el("tr"); var td0 = el("td", "muted", t("no_data")); td0.colSpan = 5;
      tr0.appendChild(td0); tbody.appendChild(tr0); return;
    }
    children.forEach(function (c) {
      var tr = el("tr", "drill");
      tr.setAttribute("data-node", c.id);
      tr.appendChild(el("td", null, c.name + " (" + label("l_", c.level) + ")"));
      tr.appendChild(el("td", "num", c.tests));
      tr.appendChild(el("td", "num", c.positives));
      tr.appendChild(el("td", "num", pct(c.positive_rate)));
      tr.appendChild(el("td", "num", c.stations_online + " / " + c.stations_total));
      tr.addEventListener("click", function () { drill(c.id); });
      tbody.appendChild(tr);
    });
  }
  function renderStations(stations) {
    var map = $("station-map");
    while (map.firstChild) { map.removeChild(map.firstChild); }
    if (!stations.length) { map.appendChild(el("p", "muted", t("no_data"))); return; }
    var groups = {}; var order = []; var alerts = [];
    stations.forEach(function (s) {
      var key = s.group_id || "";
      if (!groups[key]) { groups[key] = { name: s.group_name || key, items: [] }; order.push(key); }
      groups[key].items.push(s);
    });
    order.forEach(function (key) {
      var g = groups[key];
      var box = el("div", "town-group");
      box.appendChild(el("h3", null, g.name));
      var tiles = el("div", "tiles");
      g.items.forEach(function (s) {
        var st = s.state === "online" ? "on" : (s.state === "offline" ? "off" : "unknown");
        var tile = el("div", "tile " + st);
        tile.setAttribute("data-station", s.id);
        var known = s.outbox_depth === null || s.outbox_depth === undefined ? null : s.outbox_depth;
        var age = ago(s.backlog_age_s);
        tile.title = s.id + " · " + t(s.state || "unknown") + " · " + t("last_seen") + " " +
          fmtTime(s.last_seen) + " · " + t("backlog") + " " + (known === null ? "–" : known) + " (" + age + ")";
        tile.appendChild(el("span", "name", s.name || s.id));
        // only an online station's backlog is current; offline, the backlog now is unknown: show the last
        // one it reported, and how old that is
        if (s.state === "online") {
          tile.appendChild(el("span", "backlog", known === null ? "–" : known));
          tile.appendChild(el("span", "age", known === null ? "" : age));
        } else {
          tile.appendChild(el("span", "backlog", t("unknown")));
          tile.appendChild(el("span", "age", known === null ? "" : t("last_known") + " " + known + " · " + age));
        }
        instrumentAlerts(s, tile, alerts);
        tiles.appendChild(tile);
      });
      box.appendChild(tiles);
      map.appendChild(box);
    });
    if (alerts.length) { map.appendChild(alertList(alerts)); }
  }
  /* instruments of a station's last status in state error (with the reason) or with an event (memory
     cleared / analyzer replaced): a mark on the tile, and a line each in the list under the map */
  function instrumentAlerts(s, tile, alerts) {
    var faults = 0; var events = 0;
    (s.instruments || []).forEach(function (i) {
      if (i.state === "error") { faults += 1; alerts.push({ s: s, i: i, kind: "fault", text: i.last_error }); }
      if (i.last_event) { events += 1; alerts.push({ s: s, i: i, kind: "event", text: i.last_event }); }
    });
    if (!faults && !events) { return; }
    tile.classList.add(faults ? "fault" : "event");
    tile.appendChild(el("span", "alert", faults ? t("inst_fault") + (faults > 1 ? " ×" + faults : "") : t("inst_event")));
    tile.title += " · " + (faults ? t("inst_fault") : t("inst_event"));
  }
  function alertList(alerts) {
    var box = el("div", "inst-alerts");
    box.appendChild(el("h3", null, t("inst_alerts")));
    var ul = el("ul");
    alerts.forEach(function (a) {
      var li = el("li", a.kind);
      li.setAttribute("data-station", a.s.id);
      li.setAttribute("data-instrument", a.i.name);
      li.appendChild(el("span", "kind", t(a.kind === "fault" ? "inst_fault" : "inst_event")));
      li.appendChild(el("span", "who", (a.s.name || a.s.id) + " · " + a.i.name + (a.i.serial ? " (" + a.i.serial + ")" : "")));
      li.appendChild(el("span", "why", a.text || ""));
      ul.appendChild(li);
    });
    box.appendChild(ul);
    return box;
  }
  function renderCases(cases) {
    var tbody = $("cases-table").querySelector("tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    $("cases-empty").classList.toggle("hidden", cases.length > 0);
    cases.forEach(function (c) {
      var tr = el("tr", c.overdue ? "overdue" : "");
      tr.setAttribute("data-case", c.id);
      tr.appendChild(el("td", null, c.id));
      tr.appendChild(el("td", null, c.station_name || c.station));
      tr.appendChild(el("td", null, analyteName(c.analyte)));
      tr.appendChild(el("td", null, c.product || "–"));
      tr.appendChild(el("td", null, label("s_", c.status)));
      tr.appendChild(el("td", null, label("l_", c.level)));
      tr.appendChild(el("td", null, fmtTime(c.opened_at)));
      tr.appendChild(el("td", "deadline", fmtTime(c.deadline) + (c.overdue ? " (" + t("overdue") + ")" : "")));
      tr.addEventListener("click", function () { openCase(c.id); });
      tbody.appendChild(tr);
    });
  }

  /* ---------- lists with filters, search and paging: cases, results ---------- */
  function scopeParam() {
    var d = state.data;
    return d && d.node && d.node.id ? "&node=" + encodeURIComponent(d.node.id) : "";
  }
  function turn(list, step, load) {
    var doc = list === "cases" ? state.casesDoc : state.resultsDoc;
    var next = paging[list] + step * PAGE;
    if (next < 0 || (doc && next >= doc.total)) { return; }
    paging[list] = next; load();
  }
  function pager(list, doc) {
    var a = doc.total ? doc.offset + 1 : 0, b = doc.offset + doc.items.length;
    $(list + "-range").textContent = t("page_range").replace("{a}", a).replace("{b}", b).replace("{n}", doc.total);
    $(list + "-prev").disabled = doc.offset <= 0;
    $(list + "-next").disabled = b >= doc.total;
  }
  function loadCases() {
    if (!signedIn() || !state.data) { return; }
    var q = "?limit=" + PAGE + "&offset=" + paging.cases + scopeParam();
    var st = $("cases-status").value;
    if (st === "unclosed") { q += "&unclosed=true"; } else if (st) { q += "&status=" + encodeURIComponent(st); }
    if ($("cases-overdue").checked) { q += "&overdue=true"; }
    if ($("cases-mine").checked) { q += "&mine=true"; }
    var text = $("cases-q").value.trim();
    if (text) { q += "&q=" + encodeURIComponent(text); }
    api(API + "/cases" + q).then(function (doc) {
      state.casesDoc = doc; renderCases(doc.items); pager("cases", doc);
    }).catch(function (e) { if (window.console) { console.warn("cases failed", e); } });
  }
  function loadResults() {
    if (!signedIn() || !state.data) { return; }
    var q = "?limit=" + PAGE + "&offset=" + paging.results + scopeParam();
    var v = $("results-verdict").value;
    if (v) { q += "&verdict=" + encodeURIComponent(v); }
    var text = $("results-q").value.trim();
    if (text) { q += "&q=" + encodeURIComponent(text); }
    api(API + "/results" + q).then(function (doc) {
      state.resultsDoc = doc; renderResults(doc);
    }).catch(function (e) { if (window.console) { console.warn("results failed", e); } });
  }
  function renderResults(doc) {
    var tbody = $("results-table").querySelector("tbody");
    clear(tbody);
    pager("results", doc);
    if (!doc.items.length) {
      var tr0 = el("tr"); var td0 = el("td", "muted", t("no_data")); td0.colSpan = 6;
      tr0.appendChild(td0); tbody.appendChild(tr0); return;
    }
    doc.items.forEach(function (r) {
      var tr = el("tr", "drill");
      tr.setAttribute("data-result", r.id);
      tr.setAttribute("data-verdict", r.verdict);
      tr.appendChild(el("td", null, fmtTime(r.measured_at)));
      tr.appendChild(el("td", null, r.station_name || r.station));
      tr.appendChild(el("td", null, r.sample.product));
      tr.appendChild(el("td", null, analyteName(r.analyte) + (r.method === "enzyme" ? " · " + t("channel") + " " + r.channel : "")));
      var v = el("td"); v.appendChild(el("span", "verdict " + r.verdict, label("v_", r.verdict))); tr.appendChild(v);
      tr.appendChild(el("td", null, r.sample.id));
      tr.addEventListener("click", function () { openResult(r.id); });
      tbody.appendChild(tr);
    });
  }
  function openResult(id) {
    api(API + "/results/" + encodeURIComponent(id)).then(function (doc) {
      renderResult(doc);
      $("result-panel").scrollIntoView();
    }).catch(function (e) { if (window.console) { console.warn("result failed", e); } });
  }
  function renderResult(r) {
    state.resultDoc = r;
    $("result-panel").classList.remove("hidden");
    $("result-panel").setAttribute("data-result", r.id);
    $("result-title").textContent = analyteName(r.analyte) + " · " + label("v_", r.verdict);
    var dl = $("result-fields");
    clear(dl);
    var vals = Object.keys(r.values).filter(function (k) { return r.values[k] !== null; }).map(function (k) {
      return label("val_", k) + " " + r.values[k];
    }).join("，");
    [
      ["col_station", r.station_name || r.station],
      ["sample", r.sample.id + " · " + r.sample.product],
      ["producer", r.sample.producer || "–"],
      ["col_analyte", analyteName(r.analyte)],
      ["method", label("m_", r.method) + (r.method === "enzyme" ? " · " + t("channel") + " " + r.channel : "")],
      ["verdict", label("v_", r.verdict)],
      ["values", vals || "–"],
      ["qc", r.qc.length ? r.qc.map(qcName).join("、") : "–"],
      ["measured", fmtTime(r.measured_at)],
      ["received", fmtTime(r.received_at)],
      ["instrument", r.instrument.model + " " + r.instrument.serial],
      ["operator", r.operator || "–"]
    ].forEach(function (f) {
      dl.appendChild(el("dt", null, t(f[0])));
      dl.appendChild(el("dd", f[0] === "verdict" ? "verdict-" + r.verdict : null, f[1]));
    });
  }
  function openReport(url) {
    // reports need the bearer token: fetched, then shown from a blob. The tab is opened at once, while the
    // click still counts as the user's (a tab opened after the fetch would be blocked as a popup).
    var sep = url.indexOf("?") >= 0 ? "&" : "?";
    var full = url.indexOf("node=") >= 0 || !scopeParam() ? url : url + sep + scopeParam().slice(1);
    var tab = window.open("", "_blank");
    send(full).then(function (r) {
      if (!r.ok) { var e = new Error("HTTP " + r.status); e.status = r.status; throw e; }
      return r.blob();
    }).then(function (blob) {
      var href = URL.createObjectURL(blob);
      if (tab) { tab.location.href = href; } else { window.location.href = href; }
    }).catch(function (e) {
      if (tab) { tab.close(); }
      $("reports-error").textContent = t("report_failed") + ": " + errorText(e);
    });
  }

  /* ---------- one case: timeline and actions (交办 / 催办 / 反馈 / 办结) ---------- */
  function openCase(id) {
    state.caseId = id;
    $("case-error").textContent = "";
    api(API + "/cases/" + encodeURIComponent(id)).then(renderCase)
      .catch(function (e) { $("case-error").textContent = t("action_failed") + ": " + errorText(e); });
  }
  function renderCase(c) {
    state.caseDoc = c;
    $("case-panel").classList.remove("hidden");
    $("case-title").textContent = "#" + c.id + " · " + c.station;
    $("case-summary").textContent = label("case_reason_", c.reason) + " · " + c.product + " · " + analyteName(c.analyte) +
      " · " + label("s_", c.status) + " · " + label("l_", c.level) + " · " + fmtTime(c.deadline) +
      (c.assignee ? " · " + t("assignee") + ": " + c.assignee : "");
    var smp = c.sample;
    $("case-sample").textContent = smp
      ? t("sample") + " " + smp.code + " · " + t("col_producer") + " " + smp.producer_name + " · " + smp.product +
        " · " + t("batch") + " " + smp.batch + " · " + smp.quantity_kg + " kg · " + label("st_", smp.status) +
        (smp.retest_of ? " · " + t("retest_of") + " " + smp.retest_of : "")
      : t("unregistered");
    var lines = $("case-lines");
    clear(lines);
    (c.results || []).forEach(function (r) {
      var vals = Object.keys(r.values).filter(function (k) { return r.values[k] !== null; }).map(function (k) {
        return label("val_", k) + " " + r.values[k];
      }).join("，");
      var li = el("li", "verdict-" + r.verdict);
      var sure = r.verdict === "invalid" ? "" : sureText(r.values.margin_sd);
      li.textContent = analyteName(r.analyte) + " · " + t("channel") + " " + r.channel + " · " +
        label("v_", r.verdict) + (sure ? " · " + sure : "") + " · " + vals +
        (r.qc.length ? " · " + t("qc") + ": " + r.qc.map(qcName).join("、") : "");
      lines.appendChild(li);
    });
    var plots = $("case-signals");
    clear(plots);
    (c.results || []).forEach(function (r) {
      if (r.signal && r.signal.length > 1) {
        plots.appendChild(signalPlot(analyteName(r.analyte) + " · " + t("channel") + " " + r.channel + " · " + label("v_", r.verdict), r.signal));
      }
    });
    var pick = $("case-assignee");
    var chosen = pick.value;
    clear(pick);
    (c.assignees || []).forEach(function (name) {
      var o = el("option", null, name); o.value = name; pick.appendChild(o);
    });
    if (chosen) { pick.value = chosen; }
    var ol = $("case-actions");
    clear(ol);
    c.actions.forEach(function (a) {
      var li = el("li", "action-" + a.action);
      li.setAttribute("data-action", a.action);
      var fb = a.action === "feedback" && a.data && a.data.kind ? " · " + label("f_", a.data.kind) : "";
      var who = a.data && a.data.assignee ? " → " + a.data.assignee : "";
      // the system's own notes are English log text: say what happened from the action's data instead
      var system = a.actor === "system";
      var note = system ? systemNote(a) : (a.note ? " · " + a.note : "");
      li.textContent = fmtTime(a.at) + " " + label("a_", a.action) + who + fb + " · " +
        (system ? t("actor_system") : a.actor) + note;
      ol.appendChild(li);
    });
    $("case-form").classList.toggle("hidden", c.status === "closed");
  }
  function systemNote(a) {
    var d = a.data || {};
    if (a.action === "report") { return " · " + t("auto_report"); }
    if (a.action === "remind") { return " · " + t(d.kind === "overdue" ? "auto_remind_overdue" : "auto_remind_near"); }
    if (a.action === "escalate") {
      return " · " + t("auto_escalate") + " " + label("l_", d.to_level || "") + " " + (d.to_node || "");
    }
    return "";
  }
  function syncCaseForm() {
    var a = $("case-action").value;
    $("case-assignee-box").classList.toggle("hidden", a !== "assign");
    $("case-feedback-box").classList.toggle("hidden", a !== "feedback");
  }
  function submitCase(ev) {
    ev.preventDefault();
    if (state.caseId === null) { return; }
    var body = { action: $("case-action").value, note: $("case-note").value.trim() || null };
    if (body.action === "assign") { body.assignee = $("case-assignee").value || null; }
    if (body.action === "feedback") { body.feedback = $("case-feedback").value; }
    $("case-error").textContent = "";
    api(API + "/cases/" + encodeURIComponent(state.caseId) + "/actions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (doc) {
      $("case-note").value = "";
      renderCase(doc);
      refresh();
    }).catch(function (e) { $("case-error").textContent = t("action_failed") + ": " + errorText(e); });
  }

  /* ---------- my cases, samples and batches, producers ---------- */
  function nodeQuery(forProducers) {
    var d = state.data;
    if (!d || !d.node || !d.node.id) { return ""; }
    var code = d.node.id;
    if (forProducers && d.node.level === "station" && d.path && d.path.length > 1) {
      code = d.path[d.path.length - 2].id;  // a station's producers are those of its village
    }
    return "&node=" + encodeURIComponent(code);
  }
  function certCell(tr, number, revokedAt) {
    var td = el("td");
    if (number) {
      var a = el("a", revokedAt ? "revoked" : "cert", number + (revokedAt ? " (" + t("revoked") + ")" : ""));
      a.href = "/verify/" + encodeURIComponent(number); a.target = "_blank"; a.rel = "noopener";
      td.appendChild(a);
    } else { td.textContent = "–"; }
    tr.appendChild(td);
  }
  function statusCell(tr, status) {
    var td = el("td"); td.appendChild(el("span", "status " + status, label("st_", status))); tr.appendChild(td);
  }
  function loadSamples() {
    if (!signedIn() || !state.data) { return; }
    var st = $("samples-status").value;
    var url = st === "unregistered" ? API + "/samples/unregistered?limit=100" :
      API + "/samples?limit=100" + (st ? "&status=" + encodeURIComponent(st) : "");
    api(url + nodeQuery(false)).then(function (doc) {
      doc.unregistered = st === "unregistered"; state.samples = doc; renderSamples(doc);
    }).catch(function (e) { if (window.console) { console.warn("samples failed", e); } });
  }
  function renderSamples(doc) {
    var tbody = $("samples-table").querySelector("tbody");
    clear(tbody);
    $("samples-total").textContent = t("total") + " " + doc.total;
    if (!doc.items.length) {
      var tr0 = el("tr"); var td0 = el("td", "muted", t("no_data")); td0.colSpan = 8;
      tr0.appendChild(td0); tbody.appendChild(tr0); return;
    }
    doc.items.forEach(function (s) {
      var tr = el("tr");
      if (doc.unregistered) {
        tr.setAttribute("data-result", s.id);
        tr.appendChild(el("td", null, s.sample_id));
        tr.appendChild(el("td", null, s.station));
        tr.appendChild(el("td", "muted", t("unregistered")));
        tr.appendChild(el("td", null, s.product + " · " + analyteName(s.analyte)));
        tr.appendChild(el("td", null, "–"));
        tr.appendChild(el("td", null, fmtTime(s.measured_at)));
        tr.appendChild(el("td", null, label("v_", s.verdict)));
        tr.appendChild(el("td", null, "–"));
      } else {
        tr.setAttribute("data-sample", s.code);
        tr.setAttribute("data-status", s.status);
        tr.appendChild(el("td", null, s.code + (s.retest_of ? " ← " + s.retest_of : "")));
        tr.appendChild(el("td", null, s.station));
        var p = el("td"); var a = el("a", "producer-link", s.producer_name);
        a.addEventListener("click", function () { openProducer(s.producer); });
        p.appendChild(a); tr.appendChild(p);
        tr.appendChild(el("td", null, s.product));
        tr.appendChild(el("td", null, s.batch + " · " + s.quantity_kg + " kg"));
        tr.appendChild(el("td", null, fmtTime(s.registered_at)));
        statusCell(tr, s.status);
        certCell(tr, s.certificate, s.certificate_revoked_at);
      }
      tbody.appendChild(tr);
    });
  }
  function loadProducers() {
    if (!signedIn() || !state.data) { return; }
    var q = $("producers-q").value.trim();
    api(API + "/producers?limit=200" + (q ? "&q=" + encodeURIComponent(q) : "") +
        nodeQuery(true).replace("&node=", "&village=")).then(function (doc) {
      state.producers = doc; renderProducers(doc);
    }).catch(function (e) { if (window.console) { console.warn("producers failed", e); } });
  }
  function renderProducers(doc) {
    var tbody = $("producers-table").querySelector("tbody");
    clear(tbody);
    $("producers-total").textContent = t("total") + " " + doc.total;
    if (!doc.items.length) {
      var tr0 = el("tr"); var td0 = el("td", "muted", t("no_data")); td0.colSpan = 6;
      tr0.appendChild(td0); tbody.appendChild(tr0); return;
    }
    doc.items.forEach(function (p) {
      var tr = el("tr", "drill" + (p.held_batches ? " held" : ""));
      tr.setAttribute("data-producer", p.ref);
      tr.appendChild(el("td", null, p.name));
      tr.appendChild(el("td", null, label("k_", p.kind)));
      tr.appendChild(el("td", null, p.village_name));
      tr.appendChild(el("td", null, p.products.join("、")));
      tr.appendChild(el("td", "num", p.samples));
      tr.appendChild(el("td", "num", p.held_batches));
      tr.addEventListener("click", function () { openProducer(p.ref); });
      tbody.appendChild(tr);
    });
  }
  function importProducers() {
    var input = $("producers-file");
    var file = input.files && input.files[0];
    if (!file) { return; }
    var box = $("producers-import"), errs = $("producers-import-errors");
    clear(errs);
    box.classList.remove("hidden");
    $("producers-import-summary").textContent = "…";
    file.arrayBuffer().then(function (data) {
      return send(API + "/producers/import?filename=" + encodeURIComponent(file.name), {
        method: "POST", body: data
      });
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (!r.ok) { throw new Error(typeof doc.detail === "string" ? doc.detail : "HTTP " + r.status); }
        return doc;
      });
    }).then(function (doc) {
      $("producers-import-summary").textContent =
        t("imported").replace("{c}", doc.created).replace("{u}", doc.updated);
      doc.errors.forEach(function (e) {
        var li = el("li", null, t("row").replace("{n}", e.row) + ": " + e.error);
        li.setAttribute("data-row", e.row);
        errs.appendChild(li);
      });
      input.value = "";
      loadProducers();
    }).catch(function (e) {
      $("producers-import-summary").textContent = t("import_failed") + ": " + e.message; input.value = "";
    });
  }
  function openProducer(ref) {
    Promise.all([api(API + "/producers/" + encodeURIComponent(ref)),
                 api(API + "/producers/" + encodeURIComponent(ref) + "/history")]).then(function (both) {
      renderProducer({ producer: both[0], history: both[1] });
      $("producer-panel").scrollIntoView();
    }).catch(function (e) { if (window.console) { console.warn("producer failed", e); } });
  }
  function renderProducer(doc) {
    state.producerDoc = doc;
    var p = doc.producer, h = doc.history;
    $("producer-panel").classList.remove("hidden");
    $("producer-panel").setAttribute("data-producer", p.ref);
    $("producer-title").textContent = p.name + "（" + label("k_", p.kind) + "）";
    $("producer-info").textContent = t("code") + " " + p.code + " · " + t("col_village") + " " + p.village_name +
      " · " + t("contact") + " " + (p.contact || "–") + " " + (p.phone || "") + " · " + t("col_products") + " " +
      (p.products.join("、") || "–") + " · " + t("plots") + " " + (p.plots.join("、") || "–");
    var held = $("producer-held");
    clear(held);
    if (!h.held_batches.length) { held.appendChild(el("li", "muted", t("none_held"))); }
    h.held_batches.forEach(function (s) {
      var li = el("li", "held");
      li.setAttribute("data-sample", s.code);
      li.textContent = s.code + " · " + s.product + " · " + t("batch") + " " + s.batch + " · " + s.quantity_kg +
        " kg · " + label("st_", s.status);
      held.appendChild(li);
    });
    var tbody = $("producer-history").querySelector("tbody");
    clear(tbody);
    h.samples.forEach(function (s) {
      var tr = el("tr");
      tr.setAttribute("data-sample", s.code);
      tr.appendChild(el("td", null, s.code + (s.retest_of ? " ← " + s.retest_of : "")));
      tr.appendChild(el("td", null, s.product));
      tr.appendChild(el("td", null, s.batch));
      tr.appendChild(el("td", null, fmtTime(s.registered_at)));
      statusCell(tr, s.status);
      certCell(tr, s.certificate, s.certificate_revoked_at);
      tbody.appendChild(tr);
    });
  }
  function signalPlot(title, values) {
    var box = el("figure", "signal");
    box.appendChild(el("figcaption", null, t("signal_title") + " · " + title));
    var w = 320, h = 90;
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    var span = hi - lo || 1;
    var pts = values.map(function (v, i) {
      return (i * w / (values.length - 1)).toFixed(1) + "," + (h - 4 - (v - lo) * (h - 8) / span).toFixed(1);
    }).join(" ");
    var root = svg("svg", { viewBox: "0 0 " + w + " " + h, role: "img", "aria-label": t("signal_title") });
    root.appendChild(svg("polyline", { points: pts, "class": "trace" }));
    box.appendChild(root);
    return box;
  }

  /* ---------- charts (inline SVG, drawn here) ---------- */
  var SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = String(text); }
    return e;
  }
  function clear(box) { while (box.firstChild) { box.removeChild(box.firstChild); } }
  function barChart(box, rows) {
    clear(box);
    if (!rows.length) { box.appendChild(el("p", "muted", t("no_data"))); return; }
    var rowH = 22, left = 170, right = 120, width = 580;
    var MAX_LABEL = 24;  // characters; longer analyte names are shortened (full name in the tooltip)
    var h = rows.length * rowH + 10;
    var maxRate = Math.max.apply(null, rows.map(function (r) { return r.positive_rate || 0; }).concat([0.01]));
    var root = svg("svg", { viewBox: "0 0 " + width + " " + h, role: "img", "aria-label": t("chart_rate_title") });
    rows.forEach(function (r, i) {
      var y = 5 + i * rowH;
      var w = (width - left - right) * (r.positive_rate || 0) / maxRate;
      var name = analyteName(r.analyte);
      var shown = name.length > MAX_LABEL ? name.slice(0, MAX_LABEL - 1) + "…" : name;
      var lbl = svg("text", { x: left - 6, y: y + 14, "text-anchor": "end" }, shown);
      lbl.appendChild(svg("title", {}, name));
      root.appendChild(lbl);
      root.appendChild(svg("rect", { x: left, y: y + 3, width: Math.max(w, 1), height: rowH - 8, "class": "bar-rate" }));
      root.appendChild(svg("text", { x: left + w + 6, y: y + 14 },
        pct(r.positive_rate) + "  (" + r.positives + "/" + r.tests + ")"));
    });
    box.appendChild(root);
  }
  function dailyChart(box, rows) {
    clear(box);
    if (!rows.length) { box.appendChild(el("p", "muted", t("no_data"))); return; }
    var width = 520, height = 200, left = 36, bottom = 24, top = 10;
    var maxT = Math.max.apply(null, rows.map(function (r) { return r.tests; }).concat([1]));
    var slot = (width - left - 6) / rows.length;
    var bw = Math.max(2, slot * 0.7);
    var root = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": t("chart_daily_title") });
    var plotH = height - bottom - top;
    root.appendChild(svg("line", { x1: left, y1: top + plotH, x2: width, y2: top + plotH, "class": "axis" }));
    root.appendChild(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, maxT));
    root.appendChild(svg("text", { x: left - 4, y: top + plotH, "text-anchor": "end" }, 0));
    var every = Math.ceil(rows.length / 8);
    rows.forEach(function (r, i) {
      var x = left + i * slot + (slot - bw) / 2;
      var hT = plotH * r.tests / maxT, hP = plotH * r.positives / maxT;
      var g = svg("g", {});
      g.appendChild(svg("title", {}, r.day + ": " + r.tests + " " + t("tests") + ", " + r.positives + " " + t("positives")));
      g.appendChild(svg("rect", { x: x, y: top + plotH - hT, width: bw, height: hT, "class": "bar-tests" }));
      g.appendChild(svg("rect", { x: x, y: top + plotH - hP, width: bw, height: hP, "class": "bar-pos" }));
      root.appendChild(g);
      if (i % every === 0) {
        root.appendChild(svg("text", { x: x + bw / 2, y: height - 8, "text-anchor": "middle" }, r.day.slice(5)));
      }
    });
    box.appendChild(root);
  }

  /* ---------- boot ---------- */
  function boot() {
    var lang = load("kj.lang");
    state.lang = lang === "en" ? "en" : "zh";
    $("lang-toggle").addEventListener("click", toggleLang);
    $("logout").addEventListener("click", logout);
    $("login-form").addEventListener("submit", submitLogin);
    $("rank-level").addEventListener("change", function () { state.rankLevelChosen = true; loadRanking(); });
    $("rank-period").value = "week";
    $("rank-period").addEventListener("change", loadRanking);
    $("rank-csv").addEventListener("click", downloadRankingCsv);
    $("case-action").addEventListener("change", syncCaseForm);
    ["cases-status", "cases-overdue", "cases-mine", "cases-q"].forEach(function (id) {
      $(id).addEventListener("change", function () { paging.cases = 0; loadCases(); });
    });
    ["results-verdict", "results-q"].forEach(function (id) {
      $(id).addEventListener("change", function () { paging.results = 0; loadResults(); });
    });
    $("cases-filter").addEventListener("submit", function (ev) { ev.preventDefault(); paging.cases = 0; loadCases(); });
    $("results-filter").addEventListener("submit", function (ev) { ev.preventDefault(); paging.results = 0; loadResults(); });
    $("cases-prev").addEventListener("click", function () { turn("cases", -1, loadCases); });
    $("cases-next").addEventListener("click", function () { turn("cases", 1, loadCases); });
    $("results-prev").addEventListener("click", function () { turn("results", -1, loadResults); });
    $("results-next").addEventListener("click", function () { turn("results", 1, loadResults); });
    $("result-close-panel").addEventListener("click", function () {
      state.resultDoc = null; $("result-panel").classList.add("hidden");
    });
    $("feed-only-pos").addEventListener("change", function () {
      $("feed").classList.toggle("only-pos", $("feed-only-pos").checked);
    });
    $("reports-weekly").addEventListener("click", function () { openReport(API + "/reports/weekly?format=html"); });
    $("rank-html").addEventListener("click", function () { openReport(rankingQuery("html")); });
    $("samples-status").addEventListener("change", loadSamples);
    $("producers-q").addEventListener("change", loadProducers);
    $("producers-file").addEventListener("change", importProducers);
    $("producer-close-panel").addEventListener("click", function () {
      state.producerDoc = null; $("producer-panel").classList.add("hidden");
    });
    $("case-form").addEventListener("submit", submitCase);
    $("case-close-panel").addEventListener("click", function () {
      state.caseId = null; $("case-panel").classList.add("hidden");
    });
    syncCaseForm();
    applyLang();
    auth.on("onExpired", expired);
    auth.on("onRenewed", function () { if (state.source) { openLive(null); } });
    auth.start().then(function (ok) { if (ok) { loggedIn(); } else { showLogin(""); } },
      function (e) { showLogin(errorText(e)); });
    setInterval(function () { if (signedIn()) { refresh(); } }, 30000);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", boot); } else { boot(); }
})();
