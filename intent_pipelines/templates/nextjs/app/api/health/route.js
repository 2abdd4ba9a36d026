// Read on every request so a health probe sees the live process, not a build-time snapshot.
export const dynamic = "force-dynamic";

export function GET() {
  return Response.json({ status: "ok" });
}
