// Which role may call which RPC, as the protos declare it (served by the console).

let table = null;

export async function loadAccess() {
  if (table) return table;
  const response = await fetch('/console/access.json', { cache: 'no-cache' });
  if (!response.ok) throw new Error(`could not load the access table (${response.status})`);
  table = await response.json();
  return table;
}

// can('admin', 'loom.batch.v1.BatchService/ResolveReview')
export function can(role, method) {
  const rule = table?.[method];
  if (!rule) throw new Error(`unknown method ${method}`);
  return rule.roles.includes(role);
}
