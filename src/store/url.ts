/** Store URLs: which backend a URL names, and how to show one without its password. */

/** Whether `url` names a PostgreSQL store. */
export function isPostgresUrl(url: string): boolean {
  return url.startsWith("postgres://") || url.startsWith("postgresql://");
}

/** The URL with any password replaced by `***`, for messages and `Store.url`. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}
