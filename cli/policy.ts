/** `fleet policy`: placeholder until its issue lands. */
export async function run(_argv: string[]): Promise<number> {
  console.error("fleet policy: not implemented yet");
  return 2;
}
