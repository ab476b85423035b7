// check.mts: a short session with usersvc through a client generated from
// its own /openapi.json: openapi-typescript made schema.d.ts from the
// served document, openapi-fetch makes the calls, and tsc checks this
// file against those types before it runs. Usage: node check.mjs BASE_URL
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.d.ts";

declare const process: { argv: string[] }; // all this needs of Node's types

type User = components["schemas"]["User"];
type FieldErrors = components["schemas"]["FieldErrors"];

const base = process.argv[2];
if (!base) throw new Error("usage: node check.mjs http://127.0.0.1:PORT");
const api = createClient<paths>({ baseUrl: base });

function check(ok: unknown, what: string, got?: unknown): asserts ok {
  if (!ok) throw new Error(`${what}${got === undefined ? "" : `: got ${JSON.stringify(got)}`}`);
  console.log(`ok  ${what}`);
}

// Create two users (a page of one then has a next page).
const created: User[] = [];
for (const username of ["zoe", "max"]) {
  const { data, response } = await api.POST("/api/users", {
    params: { query: { show: ["email"] } },
    body: { username, password: "correct horse", email: `${username}@example.com` },
  });
  check(response.status === 201 && data?.user.username === username, `create ${username}: 201`, data);
  check(response.headers.get("Location") === `/api/users/${data.user.id}`, "its Location", response.headers.get("Location"));
  created.push(data.user);
}
const [zoe, max] = created as [User, User];

// Get one, keeping its ETag.
const got = await api.GET("/api/users/{id}", {
  params: { path: { id: zoe.id }, query: { show: ["email", "full_name"] } },
});
const etag = got.response.headers.get("ETag");
check(got.data?.user.email === "zoe@example.com" && got.data.user.full_name === null, "get zoe with ?show=email,full_name", got.data);
check(etag !== null, "an ETag");

// A page of one user, then the next one by the Link header's after.
const first = await api.GET("/api/users", { params: { query: { limit: 1 } } });
const link = first.response.headers.get("Link") ?? "";
check(first.data?.length === 1 && first.data[0]?.id === zoe.id, "page 1 (limit=1) holds zoe", first.data);
const next = /^<([^>]+)>; rel="next"$/.exec(link)?.[1];
check(next !== undefined, "page 1 links the next page", link);
const after = new URL(next, base).searchParams.get("after");
check(after === zoe.id, "its after= is zoe's id", after);
const second = await api.GET("/api/users", { params: { query: { limit: 1, after } } });
check(second.data?.length === 1 && second.data[0]?.id === max.id, "page 2 holds max", second.data);
check(second.response.headers.get("Link") === null, "page 2 is the last");

// Update with If-Match: the ETag read above matches once, then is stale.
const updated = await api.PATCH("/api/users/{id}", {
  params: { path: { id: zoe.id }, header: { "If-Match": etag }, query: { show: ["full_name"] } },
  body: { full_name: "Zoe Zimmer" },
});
check(updated.response.status === 200 && updated.data?.user.full_name === "Zoe Zimmer", "update with If-Match: 200", updated.data);
const stale = await api.PATCH("/api/users/{id}", {
  params: { path: { id: zoe.id }, header: { "If-Match": etag } },
  body: { full_name: "Lost Update" },
});
check(stale.response.status === 412 && stale.error !== undefined && "error" in stale.error, "the same If-Match again: 412", stale.error);

// A validation error, read as the typed field errors.
const bad = await api.POST("/api/users", { body: { username: "x!", password: "short" } });
check(bad.response.status === 400 && bad.error !== undefined, "an invalid user: 400", bad.error);
check("errors" in bad.error, "the 400 body is the errors object", bad.error);
const fields: FieldErrors["errors"] = bad.error.errors;
check(typeof fields.username === "string" && typeof fields.password === "string", "errors name username and password", fields);

// Delete, then it is gone.
const deleted = await api.DELETE("/api/users/{id}", { params: { path: { id: zoe.id } } });
check(deleted.response.status === 204, "delete zoe: 204", deleted.response.status);
const gone = await api.GET("/api/users/{id}", { params: { path: { id: zoe.id } } });
check(gone.response.status === 404 && gone.error !== undefined && "error" in gone.error && gone.error.error === "user not found", "zoe is gone: 404", gone.error);

console.log("the generated client works");
