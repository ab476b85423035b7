// usersvc admin page: users and their goals, over the service's own JSON API
// (see API.md). Plain DOM code, no framework, nothing loaded from elsewhere.
// Every piece of server data goes into the page as text (textContent or an
// attribute value), never as HTML, so the page runs under a CSP with no
// inline script and no eval. It is an ES module, so it runs in strict mode.
//
// Selectors for browser tests:
//   sign in        #signin-form, #token, #signin-submit, #signin-error ("That token is not right."),
//                  #sign-out; general messages #message (errors, role=alert), #status (notes)
//   list           #users-table, #users-body tr[data-id], #users-caption, #page-info,
//                  #prev-page, #next-page, #users-empty
//   open a user    #users-body button[data-testid="open-user"][data-username="…"]
//   search         #search-form, #search-username, #search, #clear-search, #users-empty ("No user called …")
//   create user    #create-user-form, #create-user-{username,password,email,full_name}, #create-user-submit
//   field errors   #error-<form>-<field>, e.g. #error-create-user-username, #error-edit-user-email,
//                  #error-password-password, #error-goal-title; the input gets aria-invalid="true"
//   user detail    #user-detail, #detail-username, #field-{id,username,email,full_name,created_at,modified_at},
//                  #back-to-list
//   edit user      #edit-user-form, #edit-user-{username,email,full_name}, #edit-user-submit
//   password       #password-form, #password-password, #password-submit
//   conflict       #conflict, #conflict-text ("This user changed since you opened it."), #reload
//   delete         #delete-user, then #confirm-dialog, #confirm-text, #confirm-heading, #confirm-yes ("Delete <name>"),
//                  #confirm-no (Escape also cancels)
//   goals          #goals-table, #goals-body tr[data-id], #goals-empty,
//                  #goals-body button[data-testid="edit-goal"|"delete-goal"][data-title="…"],
//                  #goal-form, #goal-form-heading ("Add a goal" / "Edit the goal “…”"),
//                  #goal-{title,period,target_minutes,description}, #goal-submit, #goal-cancel;
//                  a goal conflict uses #conflict too ("This goal changed since you opened it.")

const PAGE_SIZE = 50;
const TOKEN_KEY = "usersvc-token"; // sessionStorage only: gone when the tab closes
const LIST_SHOW = "email,full_name";
const DETAIL_SHOW = "email,full_name,goals.description";

// Field names as shown to people, to turn "is already taken" into
// "Username is already taken".
const FIELD_LABELS = {
  username: "Username",
  password: "Password",
  email: "Email",
  full_name: "Full name",
  title: "Title",
  period: "Period",
  target_minutes: "Target minutes",
  description: "Description",
  goals: "Goals",
};

const BUSY_MESSAGE = "The service is busy or its database is unavailable; try again shortly.";

const $ = (id) => document.getElementById(id);

const state = {
  token: null, // the bearer token in use, or null when the service needs none
  page: { after: null, start: 1 }, // the page shown: its ?after= and the number of its first row
  pageStack: [], // the pages before it, for "Previous page"
  nextAfter: null, // ?after= of the next page, from the Link header; null on the last page
  rowsShown: 0,
  search: null, // the username searched for, or null for the paged list
  listSeq: 0, // only the latest list request may draw the table
  user: null, // the user open in the detail view, as last read or written
  userETag: null, // its ETag: every write to it sends If-Match with this
  goal: null, // the goal being edited, or null when the goal form creates
  goalETag: null,
  // What each edit form's fields showed when filled, by element id: a field
  // is sent only when its box now differs. (A box may show a stored value
  // otherwise: a textarea turns "\r\n" into "\n", an empty full name shows as
  // an empty box; comparing with the stored value would rewrite it.)
  shown: {},
  reload: null, // what the conflict panel's Reload button does
  confirm: null, // what the confirmation dialog's Delete button does
};

// ---- Talking to the API ----------------------------------------------------

// api sends one request and reads its JSON answer. It never throws: a
// network failure is status 0, so every caller handles one shape.
async function api(method, path, { body, etag, token = state.token } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (etag) headers["If-Match"] = etag;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    return { status: 0, ok: false, data: null, etag: null, headers: new Headers() };
  }
  let data = null;
  if ((res.headers.get("Content-Type") || "").startsWith("application/json")) {
    try {
      data = await res.json();
    } catch {
      data = null; // a cut-off body: the status still says what happened
    }
  }
  return { status: res.status, statusText: res.statusText, ok: res.ok, data, etag: res.headers.get("ETag"), headers: res.headers };
}

const userPath = (id, show) => `/api/users/${encodeURIComponent(id)}` + (show ? `?show=${show}` : "");
const goalPath = (id, show) => `/api/goals/${encodeURIComponent(id)}` + (show ? `?show=${show}` : "");

// nextAfter reads ?after= from a Link: <…>; rel="next" header.
function nextAfter(link) {
  if (!link) return null;
  for (const part of link.split(",")) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (m && /\brel="?next"?/.test(m[2])) {
      return new URL(m[1], location.href).searchParams.get("after");
    }
  }
  return null;
}

// explain turns a failed answer into a sentence for people.
function explain(res) {
  const error = res.data && typeof res.data.error === "string" ? res.data.error : null;
  switch (res.status) {
    case 0:
      return "Could not reach the service (network error). Check that it is running, then try again.";
    case 429: {
      const wait = parseInt(res.headers.get("Retry-After") || "", 10);
      return Number.isFinite(wait)
        ? `Too many requests: wait ${wait} second${wait === 1 ? "" : "s"} and try again.`
        : "Too many requests: wait a moment and try again.";
    }
    case 503:
      return BUSY_MESSAGE;
    case 500:
      return "The service had an internal error. Try again; if it keeps happening, its log says why.";
    case 413:
      return "That is too large for the service to accept.";
  }
  if (res.data && res.data.errors && typeof res.data.errors === "object") {
    return Object.entries(res.data.errors)
      .map(([field, msg]) => fieldMessage(field, msg))
      .join("\n");
  }
  if (error) return sentence(error);
  return `The service answered ${res.status}${res.statusText ? " " + res.statusText : ""}; try again shortly.`;
}

// fail reports a failed answer: a refused token goes back to sign-in, field
// errors go next to their inputs in form (when given), the rest to #message.
function fail(res, form) {
  if (res.status === 401) {
    requireSignIn("The service no longer accepts your token. Sign in again.");
    return;
  }
  if (form && res.data && res.data.errors && typeof res.data.errors === "object") {
    showFieldErrors(form, res.data.errors);
    return;
  }
  showError(explain(res));
}

// ---- Messages and field errors -------------------------------------------

function sentence(text) {
  const s = String(text).trim();
  if (!s) return s;
  return s[0].toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".");
}

// fieldMessage words a field's error so that it reads on its own:
// "Username is already taken.", "Email must be a valid email address.".
function fieldMessage(field, msg) {
  const label = FIELD_LABELS[field];
  const text = String(msg);
  if (label && /^(is|are|must|should|cannot|can't|has|may)\b/.test(text)) return sentence(`${label} ${text}`);
  if (label) return sentence(text);
  return sentence(`${field}: ${text}`);
}

// showError shows text in #message and scrolls it into view, so an error
// after a click far down the page is seen (scroll: false when the focus has
// just moved to a field that says more).
function showError(text, { scroll = true } = {}) {
  $("status").textContent = "";
  $("message").textContent = text;
  if (scroll) $("message").scrollIntoView({ block: "nearest" });
}

function showNote(text) {
  $("message").textContent = "";
  $("status").textContent = text;
}

function clearMessages() {
  $("message").textContent = "";
  $("status").textContent = "";
}

// Field error elements are #error-<form>-<field>, inputs #<form>-<field>.
function clearFieldErrors(form) {
  const node = $(`${form}-form`);
  for (const box of node.querySelectorAll(".field-error")) {
    box.textContent = "";
    box.hidden = true;
  }
  for (const input of node.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

function setFieldError(form, field, text) {
  const box = $(`error-${form}-${field}`);
  const input = $(`${form}-${field}`);
  if (!box || !input) return null;
  box.textContent = text;
  box.hidden = false;
  input.setAttribute("aria-invalid", "true");
  return input;
}

// showFieldErrors puts each message next to the input it names; messages for
// fields the form does not have go to the general message area.
function showFieldErrors(form, errors) {
  const elsewhere = [];
  for (const [field, msg] of Object.entries(errors)) {
    if (!setFieldError(form, field, fieldMessage(field, msg))) elsewhere.push(fieldMessage(field, msg));
  }
  // The first field in the form's order, not in the answer's, gets focus.
  const first = $(`${form}-form`).querySelector('[aria-invalid="true"]');
  if (elsewhere.length) showError(elsewhere.join("\n"), { scroll: !first });
  else if (first) showError("Please correct the marked fields.", { scroll: false });
  if (first) first.focus();
}

// busy runs one submit of a form at a time (a double click sends one
// request), marking the form aria-busy meanwhile.
async function busy(form, fn) {
  if (form.getAttribute("aria-busy") === "true") return;
  form.setAttribute("aria-busy", "true");
  try {
    await fn();
  } finally {
    form.removeAttribute("aria-busy");
  }
}

// ---- Small DOM helpers -----------------------------------------------------

function make(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// valueNode shows an optional value, or a muted dash for null.
function valueNode(tag, value) {
  if (value === null || value === undefined || value === "") {
    const node = make(tag, "—", "none");
    node.title = "none";
    return node;
  }
  return make(tag, value);
}

// timeNode shows an RFC 3339 UTC time as "2026-11-25 11:42:41 UTC".
function timeNode(tag, value) {
  const cell = document.createElement(tag);
  const time = make("time", String(value || "").replace("T", " ").replace(/(\.\d+)?Z$/, " UTC"));
  time.dateTime = value || "";
  time.title = value || "";
  cell.append(time);
  return cell;
}

function setText(id, value) {
  const node = $(id);
  node.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  node.classList.toggle("none", value === null || value === undefined || value === "");
}

const quoted = (s) => `“${s}”`;

// ---- Sign-in -----------------------------------------------------------------

// start finds out whether the service needs a token: a list request without
// one (or with the token this tab already holds) either works or is a 401.
async function start() {
  $("loading").hidden = false;
  $("start-failed").hidden = true;
  state.token = sessionStorage.getItem(TOKEN_KEY);
  const res = await api("GET", "/api/users?limit=1");
  $("loading").hidden = true;
  if (res.ok) {
    enterApp(false);
  } else if (res.status === 401) {
    if (state.token) requireSignIn("The service no longer accepts your token. Sign in again.");
    else showSignIn();
  } else {
    showError(explain(res));
    $("start-failed").hidden = false;
  }
}

function showSignIn() {
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("signin").hidden = false;
  $("token").value = "";
  $("token").focus();
}

// requireSignIn forgets the token (it was refused) and asks for one again.
function requireSignIn(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  forgetUser();
  if ($("confirm-dialog").open) $("confirm-dialog").close();
  showSignIn();
  showError(message);
}

async function onSignIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form, async () => {
    const input = $("token");
    const errorBox = $("signin-error");
    errorBox.hidden = true;
    errorBox.textContent = "";
    input.removeAttribute("aria-invalid");
    clearMessages();
    const token = input.value.trim();
    const refuse = (text) => {
      errorBox.textContent = text;
      errorBox.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      input.select();
    };
    if (!token) return refuse("Enter the token.");
    const res = await api("GET", "/api/users?limit=1", { token });
    if (res.status === 401) return refuse("That token is not right. Check it and try again.");
    if (!res.ok) return showError(explain(res));
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    enterApp(true);
  });
}

function onSignOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  forgetUser();
  state.page = { after: null, start: 1 };
  state.pageStack = [];
  state.search = null;
  $("users-body").replaceChildren();
  showSignIn();
  showNote("Signed out. The token is no longer kept in this tab.");
}

// enterApp shows the list; focus moves to it after a sign-in, not on a
// plain page load.
function enterApp(moveFocus) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = !state.token; // no token, nothing to sign out of
  showList();
  refreshList();
  if (moveFocus) $("users-heading").focus();
}

// ---- The list of users ------------------------------------------------------

function showList() {
  $("user-detail").hidden = true;
  $("list-view").hidden = false;
}

function refreshList() {
  return state.search === null ? showPage(state.page, state.pageStack) : runSearch(state.search);
}

// showPage loads one page of users; the paging state changes only once the
// page has arrived, so a failed "Next" leaves you where you were.
async function showPage(page, stack) {
  const seq = ++state.listSeq;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE), show: LIST_SHOW });
  if (page.after) params.set("after", page.after);
  const res = await api("GET", "/api/users?" + params);
  if (seq !== state.listSeq) return;
  if (!res.ok || !Array.isArray(res.data)) return fail(res);
  state.page = page;
  state.pageStack = stack;
  state.nextAfter = nextAfter(res.headers.get("Link"));
  renderUsers(res.data);
  const pageNumber = stack.length + 1;
  const n = res.data.length;
  $("page-info").textContent = n
    ? `Page ${pageNumber}: users ${page.start}–${page.start + n - 1}`
    : `Page ${pageNumber}`;
  $("users-caption").textContent = `Users, page ${pageNumber}`;
  $("users-empty").textContent = stack.length ? "No users on this page." : "No users yet.";
  $("users-empty").hidden = n > 0;
  $("prev-page").disabled = stack.length === 0;
  $("next-page").disabled = !state.nextAfter;
}

function onNextPage() {
  if (!state.nextAfter) return;
  clearMessages();
  showPage({ after: state.nextAfter, start: state.page.start + state.rowsShown }, [...state.pageStack, state.page]);
}

function onPrevPage() {
  if (!state.pageStack.length) return;
  clearMessages();
  showPage(state.pageStack[state.pageStack.length - 1], state.pageStack.slice(0, -1));
}

async function runSearch(username) {
  const seq = ++state.listSeq;
  const params = new URLSearchParams({ username, show: LIST_SHOW });
  const res = await api("GET", "/api/users?" + params);
  if (seq !== state.listSeq) return;
  if (!res.ok || !Array.isArray(res.data)) return fail(res, "search");
  state.search = username;
  renderUsers(res.data);
  $("users-caption").textContent = `Users called ${quoted(username)}`;
  $("page-info").textContent = `Search for ${quoted(username)}: ${res.data.length} found`;
  $("users-empty").textContent = `No user called ${quoted(username)}.`;
  $("users-empty").hidden = res.data.length > 0;
  $("prev-page").disabled = true;
  $("next-page").disabled = true;
  $("clear-search").hidden = false;
}

async function onSearch(event) {
  event.preventDefault();
  clearMessages();
  clearFieldErrors("search");
  const username = $("search-username").value.trim();
  if (!username) {
    setFieldError("search", "username", "Enter a username to search for.");
    $("search-username").focus();
    return;
  }
  await busy(event.currentTarget, () => runSearch(username));
}

function onClearSearch() {
  clearMessages();
  clearFieldErrors("search");
  state.search = null;
  $("search-username").value = "";
  $("clear-search").hidden = true;
  showPage(state.page, state.pageStack);
  $("search-username").focus();
}

function renderUsers(users) {
  state.rowsShown = users.length;
  const rows = users.map((u) => {
    const tr = document.createElement("tr");
    tr.dataset.id = u.id;
    const name = document.createElement("td");
    const open = make("button", u.username, "link");
    open.type = "button";
    open.dataset.testid = "open-user";
    open.dataset.id = u.id;
    open.dataset.username = u.username;
    open.addEventListener("click", () => openUser(u.id));
    name.append(open);
    tr.append(name, valueNode("td", u.email), valueNode("td", u.full_name),
      timeNode("td", u.created_at), timeNode("td", u.modified_at));
    return tr;
  });
  $("users-body").replaceChildren(...rows);
}

async function onCreateUser(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form, async () => {
    clearMessages();
    clearFieldErrors("create-user");
    const body = {
      username: $("create-user-username").value,
      password: $("create-user-password").value,
    };
    // Optional fields left empty are simply not sent.
    const email = $("create-user-email").value.trim();
    const fullName = $("create-user-full_name").value;
    if (email) body.email = email;
    if (fullName) body.full_name = fullName;
    const res = await api("POST", "/api/users?show=" + LIST_SHOW, { body });
    if (res.status !== 201 || !res.data || !res.data.user) return fail(res, "create-user");
    form.reset();
    const user = { ...res.data.user, goals: [] };
    showUser(user, res.etag);
    showNote(`Created the user ${quoted(user.username)}.`);
  });
}

// ---- One user ----------------------------------------------------------------

function forgetUser() {
  state.user = null;
  state.userETag = null;
  state.goal = null;
  state.goalETag = null;
  hideConflict();
}

// openUser reads a user with all fields and goals and shows it.
async function openUser(id) {
  clearMessages();
  const res = await api("GET", userPath(id, DETAIL_SHOW));
  if (res.status === 404) {
    showError("That user no longer exists.");
    showList();
    refreshList();
    return;
  }
  if (!res.ok || !res.data || !res.data.user) return fail(res);
  showUser(res.data.user, res.etag);
}

// showUser switches to the detail view for a user just read or created.
function showUser(user, etag) {
  forgetUser();
  for (const form of ["edit-user", "password", "goal"]) clearFieldErrors(form);
  setUser(user, etag);
  fillEditForm(user);
  $("password-password").value = "";
  renderGoals(user.goals || []);
  resetGoalForm();
  $("list-view").hidden = true;
  $("user-detail").hidden = false;
  $("detail-heading").focus();
}

// setUser records the user and the ETag to send with the next write, and
// shows its fields; the edit form is left alone so unsaved edits survive.
function setUser(user, etag) {
  const goals = user.goals || (state.user && state.user.goals) || [];
  state.user = { ...user, goals };
  state.userETag = etag;
  $("detail-username").textContent = user.username;
  $("password-username").value = user.username;
  document.title = `${user.username} — usersvc admin`;
  for (const field of ["id", "username", "email", "full_name"]) setText(`field-${field}`, user[field]);
  $("field-created_at").replaceChildren(timeNode("span", user.created_at));
  $("field-modified_at").replaceChildren(timeNode("span", user.modified_at));
  captionGoals();
}

function fillEditForm(user) {
  $("edit-user-username").value = user.username;
  $("edit-user-email").value = user.email || "";
  $("edit-user-full_name").value = user.full_name || "";
  noteShown("edit-user-username", "edit-user-email", "edit-user-full_name");
}

// noteShown remembers what the boxes of ids show now (see state.shown).
function noteShown(...ids) {
  for (const id of ids) state.shown[id] = $(id).value;
}

// edited reports whether the box of id differs from what it showed when
// its form was filled.
function edited(id) {
  return $(id).value !== state.shown[id];
}

function onBackToList() {
  const id = state.user && state.user.id;
  forgetUser();
  clearMessages();
  document.title = "usersvc admin";
  showList();
  refreshList().then(() => {
    // Back where you were: on the user's row when it is still listed.
    const button = id && $("users-body").querySelector(`tr[data-id="${CSS.escape(id)}"] button`);
    (button || $("users-heading")).focus();
  });
}

// userGone handles a 404 on a user being edited: someone deleted it.
function userGone() {
  const name = state.user ? quoted(state.user.username) : "This user";
  forgetUser();
  showList();
  refreshList();
  showError(`${name} no longer exists: someone deleted it.`);
  $("users-heading").focus();
}

async function onEditUser(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form, async () => {
    clearMessages();
    clearFieldErrors("edit-user");
    const user = state.user;
    // Only the fields edited are sent; an emptied optional field is null.
    const changes = {};
    if (edited("edit-user-username")) changes.username = $("edit-user-username").value;
    if (edited("edit-user-email")) changes.email = $("edit-user-email").value.trim() || null;
    if (edited("edit-user-full_name")) changes.full_name = $("edit-user-full_name").value || null;
    if (!Object.keys(changes).length) return showNote("Nothing to save: no field changed.");
    const res = await api("PATCH", userPath(user.id, LIST_SHOW), { body: changes, etag: state.userETag });
    if (res.status === 412) return showConflict("This user changed since you opened it.", reloadUser);
    if (res.status === 404) return userGone();
    if (!res.ok || !res.data || !res.data.user) return fail(res, "edit-user");
    setUser(res.data.user, res.etag);
    fillEditForm(res.data.user);
    showNote(`Saved ${quoted(res.data.user.username)}.`);
  });
}

async function onSetPassword(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form, async () => {
    clearMessages();
    clearFieldErrors("password");
    const password = $("password-password").value;
    if (!password) {
      setFieldError("password", "password", "Enter the new password.");
      $("password-password").focus();
      return;
    }
    const res = await api("PATCH", userPath(state.user.id, LIST_SHOW), { body: { password }, etag: state.userETag });
    if (res.status === 412) return showConflict("This user changed since you opened it.", reloadUser);
    if (res.status === 404) return userGone();
    if (!res.ok || !res.data || !res.data.user) return fail(res, "password");
    $("password-password").value = "";
    setUser(res.data.user, res.etag);
    showNote(`Set a new password for ${quoted(res.data.user.username)}.`);
  });
}

// reloadUser reads the user again after a conflict; the forms then show
// what is stored now, and the next write uses its ETag.
async function reloadUser() {
  const id = state.user.id;
  await openUser(id);
  if (state.user) showNote("Reloaded: this is the user as stored now.");
}

// onDeleteUser reads the user's goals first, so the confirmation counts
// those stored now, and once more when it is confirmed: If-Match covers the
// user's own fields, not goals someone else wrote meanwhile, and those would
// go with the user unseen. Goals that changed in between stop the deletion
// (one written between that last read and the DELETE still goes unseen:
// the page cannot close that moment). A read that ends after the operator
// has moved on to another user is dropped.
async function onDeleteUser() {
  clearMessages();
  const user = state.user;
  const goals = await currentGoals(user.id);
  if (!goals) return;
  const count = goals.length;
  const what = count ? ` Their ${count} goal${count === 1 ? "" : "s"} will be deleted with them.` : "";
  askToConfirm(
    "Delete this user?",
    `Delete the user ${quoted(user.username)}?${what} This cannot be undone.`,
    `Delete ${user.username}`,
    async () => {
      if (!shown(user.id)) return;
      const now = await currentGoals(user.id);
      if (!now) return;
      if (goalsDiffer(now, goals)) {
        showError(`The goals of ${quoted(user.username)} changed since you asked to delete them: ` +
          "they are shown as stored now. Nothing was deleted.");
        return;
      }
      const res = await api("DELETE", userPath(user.id), { etag: state.userETag });
      if (res.status === 412) return showConflict("This user changed since you opened it.", reloadUser);
      if (res.status === 404) return userGone();
      if (res.status !== 204) return fail(res);
      forgetUser();
      document.title = "usersvc admin";
      showList();
      await refreshList();
      showNote(`Deleted the user ${quoted(user.username)}.`);
      $("users-heading").focus();
    },
  );
}

// currentGoals reads the goals of the user shown and shows them; null
// when the user is gone or the read failed (both said), or when another
// user is shown by the time it is read (nothing said: the operator moved on).
async function currentGoals(id) {
  const res = await api("GET", userPath(id, "goals.description"));
  if (!shown(id)) return null;
  if (res.status === 404) {
    userGone();
    return null;
  }
  if (!res.ok || !res.data || !res.data.user) {
    fail(res);
    return null;
  }
  const goals = res.data.user.goals || [];
  renderGoals(goals);
  return goals;
}

// shown reports whether the user with id is the one the page shows.
function shown(id) {
  return Boolean(state.user) && state.user.id === id;
}

// goalsDiffer reports whether two reads of a user's goals differ in any
// goal or field.
function goalsDiffer(a, b) {
  return JSON.stringify(a) !== JSON.stringify(b);
}

// ---- Conflicts -------------------------------------------------------------

// showConflict says a write was refused because the resource changed since it
// was read (412), and offers to read it again; nothing is retried silently.
function showConflict(text, reload) {
  state.reload = reload;
  $("conflict-text").textContent = text;
  $("conflict").hidden = false;
  $("reload").focus();
}

function hideConflict() {
  state.reload = null;
  $("conflict").hidden = true;
  $("conflict-text").textContent = "";
}

async function onReload() {
  const reload = state.reload;
  hideConflict();
  clearMessages();
  if (reload) await reload();
}

// ---- Goals -------------------------------------------------------------------

function renderGoals(goals) {
  state.user.goals = goals;
  const rows = goals.map((g) => {
    const tr = document.createElement("tr");
    tr.dataset.id = g.id;
    const actions = make("td", null, "actions");
    actions.append(
      goalButton("Edit", "edit-goal", g, () => editGoal(g.id)),
      goalButton("Delete", "delete-goal", g, () => deleteGoal(g.id)),
    );
    tr.append(make("td", g.title), make("td", g.period), make("td", g.target_minutes, "number"),
      valueNode("td", g.description), actions);
    return tr;
  });
  $("goals-body").replaceChildren(...rows);
  captionGoals();
  $("goals-empty").hidden = goals.length > 0;
}

function captionGoals() {
  $("goals-caption").textContent = `Goals of ${state.user.username} (${state.user.goals.length})`;
}

// goalButton is "Edit" or "Delete", named for screen readers after its goal.
function goalButton(label, testid, goal, onClick) {
  const button = make("button", label, label === "Delete" ? "small secondary" : "small");
  button.type = "button";
  button.append(make("span", ` goal ${quoted(goal.title)}`, "visually-hidden"));
  button.dataset.testid = testid;
  button.dataset.id = goal.id;
  button.dataset.title = goal.title;
  button.addEventListener("click", onClick);
  return button;
}

// refreshGoals reads the user's goals again after a goal was written. It
// keeps the user's own ETag: a goal write does not make the user stale.
async function refreshGoals() {
  const res = await api("GET", userPath(state.user.id, "goals.description"));
  if (res.status === 404) return userGone();
  if (!res.ok || !res.data || !res.data.user) return fail(res);
  renderGoals(res.data.user.goals || []);
}

function resetGoalForm() {
  state.goal = null;
  state.goalETag = null;
  $("goal-form").reset();
  clearFieldErrors("goal");
  $("goal-form-heading").textContent = "Add a goal";
  $("goal-submit").textContent = "Add goal";
  $("goal-cancel").hidden = true;
}

function fillGoalForm(goal) {
  $("goal-title").value = goal.title;
  $("goal-period").value = goal.period;
  $("goal-target_minutes").value = String(goal.target_minutes);
  $("goal-description").value = goal.description || "";
  noteShown("goal-title", "goal-period", "goal-target_minutes", "goal-description");
  $("goal-form-heading").textContent = `Edit the goal ${quoted(goal.title)}`;
  $("goal-submit").textContent = "Save goal";
  $("goal-cancel").hidden = false;
}

// readGoal reads one goal with its ETag (the list in the user does not carry
// one per goal). It reports a failure and returns null.
async function readGoal(id) {
  const res = await api("GET", goalPath(id, "description"));
  if (res.ok && res.data && res.data.goal) return res;
  if (res.status === 404) {
    showError("That goal no longer exists.");
    await refreshGoals();
  } else {
    fail(res);
  }
  return null;
}

async function editGoal(id) {
  clearMessages();
  const res = await readGoal(id);
  if (!res) return;
  clearFieldErrors("goal");
  state.goal = res.data.goal;
  state.goalETag = res.etag;
  fillGoalForm(state.goal);
  $("goal-title").focus();
}

async function reloadGoal() {
  const id = state.goal && state.goal.id;
  await refreshGoals();
  if (!id) return;
  const res = await readGoal(id);
  if (!res) return resetGoalForm();
  state.goal = res.data.goal;
  state.goalETag = res.etag;
  fillGoalForm(state.goal);
  showNote("Reloaded: the form shows the goal as stored now.");
  $("goal-title").focus();
}

async function onSaveGoal(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await busy(form, async () => {
    clearMessages();
    clearFieldErrors("goal");
    const minutesInput = $("goal-target_minutes");
    if (minutesInput.validity.badInput) {
      setFieldError("goal", "target_minutes", "Target minutes must be a whole number.");
      minutesInput.focus();
      return;
    }
    const raw = minutesInput.value.trim();
    const fields = {
      title: $("goal-title").value,
      period: $("goal-period").value,
      // An empty box is sent as missing (create) or null (edit): the service says why that is wrong.
      target_minutes: raw === "" ? null : Number(raw),
      description: $("goal-description").value || null,
    };
    const editing = state.goal;
    if (editing) {
      const changes = {};
      for (const [k, v] of Object.entries(fields)) if (edited(`goal-${k}`)) changes[k] = v;
      if (!Object.keys(changes).length) return showNote("Nothing to save: no field changed.");
      const res = await api("PATCH", goalPath(editing.id, "description"), { body: changes, etag: state.goalETag });
      if (res.status === 412) return showConflict("This goal changed since you opened it.", reloadGoal);
      if (res.status === 404) {
        resetGoalForm();
        showError("That goal no longer exists: someone deleted it.");
        return refreshGoals();
      }
      if (!res.ok || !res.data || !res.data.goal) return fail(res, "goal");
      resetGoalForm();
      await refreshGoals();
      showNote(`Saved the goal ${quoted(res.data.goal.title)}.`);
    } else {
      const body = { ...fields };
      for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
      const res = await api("POST", `${userPath(state.user.id)}/goals?show=description`, { body });
      if (res.status === 404) return userGone();
      if (res.status !== 201 || !res.data || !res.data.goal) return fail(res, "goal");
      resetGoalForm();
      await refreshGoals();
      showNote(`Added the goal ${quoted(res.data.goal.title)}.`);
    }
    $("goal-title").focus();
  });
}

function onCancelGoal() {
  resetGoalForm();
  clearMessages();
  $("goal-title").focus();
}

// deleteGoal reads the goal first, so the confirmation names it as stored
// now and the DELETE carries its ETag.
async function deleteGoal(id) {
  clearMessages();
  const res = await readGoal(id);
  if (!res) return;
  const goal = res.data.goal;
  const etag = res.etag;
  askToConfirm(
    "Delete this goal?",
    `Delete the goal ${quoted(goal.title)} of ${quoted(state.user.username)}? This cannot be undone.`,
    `Delete ${goal.title}`,
    async () => {
      const del = await api("DELETE", goalPath(goal.id), { etag });
      if (del.status === 412) return showConflict("This goal changed since you opened it.", refreshGoals);
      if (del.status !== 204 && del.status !== 404) return fail(del);
      if (state.goal && state.goal.id === goal.id) resetGoalForm();
      await refreshGoals();
      showNote(del.status === 204 ? `Deleted the goal ${quoted(goal.title)}.` : "That goal was already deleted.");
      $("goal-form-heading").focus();
    },
  );
}

// ---- Confirmation dialog ---------------------------------------------------

// askToConfirm opens the modal dialog naming what is to be deleted. Cancel
// (or Escape) does nothing; the focus returns where it was. Nothing listens
// for the dialog's "close" event: the browser fires it late, after a quick
// Cancel-then-Delete has opened the dialog again, and it would forget the new
// action. An action left by Escape is harmless: the next askToConfirm
// replaces it, and Delete cannot be pressed while the dialog is closed.
function askToConfirm(heading, text, buttonLabel, action) {
  state.confirm = action;
  $("confirm-heading").textContent = heading;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = buttonLabel;
  $("confirm-dialog").showModal();
  $("confirm-no").focus(); // the safe choice is the default
}

async function onConfirmYes() {
  const action = state.confirm;
  state.confirm = null;
  $("confirm-dialog").close();
  clearMessages();
  if (action) await action();
}

function onConfirmNo() {
  state.confirm = null;
  $("confirm-dialog").close();
}

// ---- Wiring ------------------------------------------------------------------

function init() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", onSignOut);
  $("retry-start").addEventListener("click", () => { clearMessages(); start(); });
  $("search-form").addEventListener("submit", onSearch);
  $("clear-search").addEventListener("click", onClearSearch);
  $("prev-page").addEventListener("click", onPrevPage);
  $("next-page").addEventListener("click", onNextPage);
  $("create-user-form").addEventListener("submit", onCreateUser);
  $("back-to-list").addEventListener("click", onBackToList);
  $("edit-user-form").addEventListener("submit", onEditUser);
  $("password-form").addEventListener("submit", onSetPassword);
  $("delete-user").addEventListener("click", onDeleteUser);
  $("reload").addEventListener("click", onReload);
  $("goal-form").addEventListener("submit", onSaveGoal);
  $("goal-cancel").addEventListener("click", onCancelGoal);
  $("confirm-yes").addEventListener("click", onConfirmYes);
  $("confirm-no").addEventListener("click", onConfirmNo);
  start();
}

init();
