// The UI's mirror of the server's permission rule for one execution (the server
// decides; this only chooses which buttons to show).

/** Stop is allowed with the job's stop permission, or to whoever started the run. */
export function stopAllowed(permissions, execution, user) {
  if (!user) return false;
  return Boolean(user.superuser || (permissions && permissions.stop) || execution.user === user.username);
}
