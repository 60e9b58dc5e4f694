/**
 * The URN of a component's child dynamic resource, for its progress lines in `pulumi up` (the
 * provider logs with it). Taken from the component's URN, but without the component as a
 * dependency: an input that depends on a component makes each of its children wait for all the
 * others, so two such children (two batches of one HubRegistration or RotationSchedule) would
 * wait for each other forever. An Output made from a plain promise carries no resources.
 */
import * as pulumi from "@pulumi/pulumi";

export function childUrn(
  parent: pulumi.Resource,
  name: string,
  type = "pulumi-nodejs:dynamic:Resource",
): pulumi.Output<string> {
  const parentUrn = pulumi.output(new Promise<string>((resolve) => parent.urn.apply(resolve)));
  return pulumi.createUrn(name, type, parentUrn);
}
