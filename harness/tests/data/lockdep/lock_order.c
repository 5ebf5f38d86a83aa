// SPDX-License-Identifier: GPL-2.0
/*
 * lock_order - takes two mutexes in one order, then in the other, so that
 * lockdep reports a possible circular locking dependency (no deadlock).
 */

#include <linux/module.h>
#include <linux/mutex.h>

static DEFINE_MUTEX(first);
static DEFINE_MUTEX(second);

static int __init lock_order_init(void)
{
	mutex_lock(&first);
	mutex_lock(&second);
	mutex_unlock(&second);
	mutex_unlock(&first);

	mutex_lock(&second);
	mutex_lock(&first);
	mutex_unlock(&first);
	mutex_unlock(&second);
	return 0;
}

static void __exit lock_order_exit(void)
{
}

module_init(lock_order_init);
module_exit(lock_order_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Two mutexes taken in both orders, for a lockdep report");
