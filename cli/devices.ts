/** `fleet devices`: placeholder until its issue lands. */
export async function run(_argv: string[]): Promise<number> {
  console.error("fleet devices: not implemented yet");
  return 2;
}
