// SPDX-License-Identifier: GPL-2.0
/*
 * rcu_stall - keeps a CPU from passing through a quiescent state for
 * longer than the RCU stall timeout, so that the kernel reports an RCU
 * CPU stall: a test that the harness notices one.
 */

#include <linux/module.h>
#include <linux/delay.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>

static unsigned int seconds = 8;
module_param(seconds, uint, 0444);
MODULE_PARM_DESC(seconds, "how long to hold the CPU with preemption off");

static struct rcu_head head;

static void rcu_stall_done(struct rcu_head *unused)
{
}

static int __init rcu_stall_init(void)
{
	/* A grace period that needs this CPU: only then is a stall seen. */
	call_rcu(&head, rcu_stall_done);
	preempt_disable();
	mdelay(seconds * 1000);
	preempt_enable();
	return 0;
}

static void __exit rcu_stall_exit(void)
{
	rcu_barrier();
}

module_init(rcu_stall_init);
module_exit(rcu_stall_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Holds a CPU long enough for an RCU stall report");
